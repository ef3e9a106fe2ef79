"""No secrets in a run's files or logs: the W&B API key and the environment never reach them.

`tiny_run` fits and resumes the tiny recipe with W&B logging (offline), ``WANDB_API_KEY`` and a canary
variable set. Every byte the run wrote (config.yaml, hparams.yaml, metrics.csv, checkpoints, the tokenizer,
the W&B offline run and its logs, lmforge's own Python log) is searched for both.
"""

from __future__ import annotations

from pathlib import Path

from reliability_kit import CANARY, SECRET_KEY


def written_files(run) -> list[Path]:
    """Everything under the working directory but the recipe and the data the test wrote."""
    inputs = {run.root / name for name in ("tiny.yaml", "train.txt", "val.txt")}
    return [p for p in sorted(run.root.rglob("*")) if p.is_file() and p not in inputs]


def test_the_api_key_and_the_environment_appear_in_no_file_the_run_wrote(tiny_run) -> None:
    files = written_files(tiny_run)
    names = {p.name for p in files}
    # The places a secret could leak to are all there, so that the search below means something.
    assert {"config.yaml", "hparams.yaml", "metrics.csv", "last.ckpt", "python.log", "debug.log"} <= names
    assert any(p.suffix == ".wandb" for p in files)
    leaks = [str(p) for p in files if SECRET_KEY.encode() in p.read_bytes() or CANARY.encode() in p.read_bytes()]
    assert leaks == []


def test_the_search_would_find_a_string_in_those_files(tiny_run) -> None:
    """Positive controls: what is meant to be recorded is found the same way."""
    wandb_file = next(tiny_run.root.rglob("*.wandb"))
    assert b"CausalLM" in wandb_file.read_bytes()  # the W&B run's config/tags hold the recipe's plugins
    assert b"Training a bpe tokenizer" in (tiny_run.root / "python.log").read_bytes()
    assert b"max_steps: 4" in (tiny_run.fit / "config.yaml").read_bytes()

