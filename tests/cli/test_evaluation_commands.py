"""``lmforge validate`` and ``lmforge test`` after a run: they log beside the checkpoint's run (no new
``version_N``), ``test`` reads ``data.test`` when given and otherwise says it scores the validation split, and
``fit`` ends with a summary that names the best checkpoint, the run and the next commands."""

from __future__ import annotations

import csv
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

LMFORGE = str(Path(sys.executable).parent / "lmforge")
WORDS = "the cat sat on a mat and the dog ran to the park while birds sang in tall green trees".split()
OTHER = "a storm rolled over the harbour and the old boats knocked against the pier all night".split()
RECIPE = """\
seed_everything: 1
model:
  backbone: {architecture: gpt2, config: {n_layer: 1, n_embd: 16, n_head: 2, n_positions: 32}}
  objective: CausalLM
data:
  class_path: lmforge.core.data.TextData
  init_args: {train: train.txt, val: val.txt, tokenizer: {train: {vocab_size: 300}}, block_size: 16, batch_size: 4}
trainer:
  max_steps: 4
  val_check_interval: 2
  check_val_every_n_epoch: null
  limit_val_batches: 2
  log_every_n_steps: 1
  logger: {class_path: lightning.pytorch.loggers.CSVLogger, init_args: {save_dir: runs, name: tiny}}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {monitor: val/loss, mode: min, save_last: true, filename: "best-{step}"}
"""


def write_docs(path: Path, words: list[str], n: int, seed: int) -> None:
    rng = random.Random(seed)
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(8, 30))) + "."
                              for _ in range(n)) + "\n")


def lmforge(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([LMFORGE, *args], cwd=root, env={**os.environ, "OMP_NUM_THREADS": "1"}, text=True,
                          capture_output=True, timeout=240)


def metrics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("evaluate")
    write_docs(root / "train.txt", WORDS, 200, seed=1)
    write_docs(root / "val.txt", WORDS, 30, seed=2)
    write_docs(root / "test.txt", OTHER, 30, seed=3)
    (root / "tiny.yaml").write_text(RECIPE)
    result = lmforge(root, "fit", "--config", "tiny.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


def console_value(output: str, key: str) -> float:
    line = next(line for line in output.splitlines() if f" {key} " in line)
    return float(line.replace("│", " ").split()[-1])


@pytest.mark.slow
def test_fit_ends_with_a_summary_of_the_run(fitted) -> None:
    root, result = fitted
    run_dir = root / "runs" / "tiny" / "version_0"
    best = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    val = [float(r["val/loss"]) for r in metrics(run_dir / "metrics.csv") if r.get("val/loss")]
    summary = result.stderr.split("lmforge: trained to step 4")[1]
    assert result.stderr.splitlines()[-1].strip() == "lmforge plot runs/tiny/version_0"  # the last thing printed
    assert "the run is in runs/tiny/version_0" in summary.splitlines()[0]
    assert f"final {val[-1]:.4f}" in summary and f"best {min(val):.4f}" in summary
    assert f"best checkpoint: runs/tiny/version_0/checkpoints/{best.name}" in summary
    assert f"lmforge export runs/tiny/version_0/checkpoints/{best.name} tiny-model" in summary
    assert "lmforge plot runs/tiny/version_0" in summary


@pytest.mark.slow
def test_validate_and_test_log_beside_the_run_and_test_reads_data_test(fitted) -> None:
    root, _ = fitted
    run_dir = root / "runs" / "tiny" / "version_0"
    ckpt = str(run_dir / "checkpoints" / "last.ckpt")
    whole = ["--trainer.limit_val_batches", "1.0"]  # every batch, as test scores them
    validated = lmforge(root, "validate", "--config", "tiny.yaml", *whole, "--ckpt_path", ckpt)
    assert validated.returncode == 0, validated.stderr[-3000:]
    on_val = lmforge(root, "test", "--config", "tiny.yaml", "--ckpt_path", ckpt)
    assert on_val.returncode == 0, on_val.stderr[-3000:]
    assert "scores the validation split" in "\n".join(on_val.stderr.splitlines()[:3])
    assert console_value(on_val.stdout, "test/loss") == console_value(validated.stdout, "val/loss")
    on_test = lmforge(root, "test", "--config", "tiny.yaml", "--data.init_args.test", "test.txt", "--ckpt_path", ckpt)
    assert on_test.returncode == 0, on_test.stderr[-3000:]
    assert "validation split" not in on_test.stderr
    # Reference: the test file scored as the validation split.
    reference = lmforge(root, "validate", "--config", "tiny.yaml", "--data.init_args.val", "test.txt", *whole,
                        "--ckpt_path", ckpt)
    assert console_value(on_test.stdout, "test/loss") == console_value(reference.stdout, "val/loss")
    assert console_value(on_test.stdout, "test/loss") != console_value(validated.stdout, "val/loss")

    assert sorted(p.name for p in (root / "runs" / "tiny").iterdir()) == ["version_0"]
    assert len([r for r in metrics(run_dir / "validate" / "metrics.csv") if r.get("val/loss")]) == 2  # appended
    assert len([r for r in metrics(run_dir / "test" / "metrics.csv") if r.get("test/loss")]) == 2
    refit = lmforge(root, "fit", "--config", "tiny.yaml", "--trainer.max_steps", "1")
    assert refit.returncode == 0, refit.stderr[-3000:]
    assert sorted(p.name for p in (root / "runs" / "tiny").iterdir()) == ["version_0", "version_1"]


@pytest.mark.slow
def test_validate_without_a_checkpoint_warns_that_the_model_is_untrained(fitted) -> None:
    root, _ = fitted
    result = lmforge(root, "validate", "--config", "tiny.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "untrained model" in "\n".join(result.stderr.splitlines()[:3])
    assert (root / "runs" / "tiny" / "validate").is_dir()  # beside the training runs, not a new version_N
    assert not any(p.name == "version_2" for p in (root / "runs" / "tiny").iterdir())
