"""Every bundled recipe parses; the quickstart trains, validates from its checkpoint and exports."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import yaml

from lmforge.cli.main import main
from lmforge.cli.training import run_cli
from lmforge.cli.recipes import bundled_recipes

RECIPES = {name: path for name, path in bundled_recipes().items() if not name.startswith("overlays/")}
#: Lightning refuses these strategies on CPU; tests/scale/test_overlays.py parses them and builds their strategies.
GPU_ONLY = {"overlays/fsdp", "overlays/deepspeed-zero2", "overlays/deepspeed-zero3"}
OVERLAYS = {name: path for name, path in bundled_recipes().items()
            if name.startswith("overlays/") and name not in GPU_ONLY}
FAST = ["--trainer.max_steps", "4", "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "2",
        "--trainer.enable_progress_bar", "false", "--data.init_args.batch_size", "4",
        "--data.init_args.block_size", "32", "--data.init_args.tokenizer.train.vocab_size", "300"]


@pytest.fixture
def no_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["lmforge"])


def class_names(value: object) -> list[str]:
    """The class names a recipe value names: a short name, a ``class_path`` dict, or a list of them."""
    items = value if isinstance(value, list) else [] if value is None else [value]
    return [(item["class_path"] if isinstance(item, dict) else item).rsplit(".", 1)[-1] for item in items]


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_parses_and_builds(name: str, no_argv: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What is built is what the YAML names: the objective, each plugin list in order, the data module, the steps."""
    monkeypatch.chdir(tmp_path)
    cli = run_cli(["--config", str(RECIPES[name])], run=False)
    recipe = yaml.safe_load(RECIPES[name].read_text())
    model = recipe["model"]
    assert type(cli.model).__name__ == "LanguageModel"
    assert [type(cli.model.objective).__name__] == class_names(model["objective"])
    for key in ("regularizers", "augmenters", "bias_mitigators"):
        assert [type(p).__name__ for p in getattr(cli.model, key)] == class_names(model.get(key)), key
    assert class_names(model.get("distiller")) == ([type(cli.model.distiller).__name__] if cli.model.distiller else [])
    assert [type(cli.datamodule).__name__] == class_names(recipe["data"])
    assert cli.trainer.max_steps == recipe["trainer"]["max_steps"]


#: What each trainer setting of an overlay makes of the trainer.
STRATEGIES = {"ddp": "DDPStrategy"}


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_composes_with_quickstart(overlay: str, no_argv: None, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The overlay's trainer settings take effect, and the quickstart's other settings survive the merge."""
    monkeypatch.chdir(tmp_path)
    cli = run_cli(["--config", str(RECIPES["quickstart"]), "--config", str(OVERLAYS[overlay])], run=False)
    settings = yaml.safe_load(OVERLAYS[overlay].read_text())
    assert set(settings) <= {"trainer", "model"}, "an overlay of another section: check what it sets here"
    assert set(settings.get("model", {})) <= {"data_filters"}, "a new model setting: check it here"
    if "data_filters" in settings.get("model", {}):
        assert [type(p).__name__ for p in cli.model.data_filters] == class_names(settings["model"]["data_filters"])
    trainer = settings["trainer"]
    assert set(trainer) <= {"logger", "strategy", "devices", "num_nodes", "callbacks+"}, \
        "a new trainer setting: check it here"
    if "callbacks+" in trainer:  # appended to the quickstart's own callbacks, which stay
        names = [type(callback).__name__ for callback in cli.trainer.callbacks]
        assert set(class_names(trainer["callbacks+"])) <= set(names)
        assert set(class_names(yaml.safe_load(RECIPES["quickstart"].read_text())["trainer"]["callbacks"])) <= set(names)
    if "logger" in trainer:
        assert [type(logger).__name__ for logger in cli.trainer.loggers] == class_names(trainer["logger"])
    if "strategy" in trainer:
        strategy = trainer["strategy"]
        expected = STRATEGIES[strategy] if isinstance(strategy, str) else class_names(strategy)[0]
        assert type(cli.trainer.strategy).__name__ == expected
    if "num_nodes" in trainer:
        assert cli.trainer.num_nodes == trainer["num_nodes"]
    quickstart = yaml.safe_load(RECIPES["quickstart"].read_text())
    assert cli.trainer.max_steps == quickstart["trainer"]["max_steps"]
    assert [type(cli.model.objective).__name__] == class_names(quickstart["model"]["objective"])
    if "logger" not in trainer:  # the quickstart's logger stays
        assert [type(logger).__name__ for logger in cli.trainer.loggers] == \
            class_names(quickstart["trainer"]["logger"])


def test_every_recipe_has_a_header_comment() -> None:
    for name, path in bundled_recipes().items():
        first = path.read_text().splitlines()[0]
        assert first.startswith("# ") and len(first) > 10, name


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def last_value(rows: list[dict[str, str]], key: str) -> float:
    return [float(r[key]) for r in rows if r.get(key)][-1]


@pytest.mark.slow
def test_quickstart_fit_validate_and_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--config", "quickstart", *FAST]) == 0
    run = tmp_path / "runs" / "quickstart" / "version_0"
    assert {"config.yaml", "metrics.csv", "tokenizer", "checkpoints"} <= {p.name for p in run.iterdir()}
    fit_val_loss = last_value(read_metrics(run), "val/loss")
    ckpt = run / "checkpoints" / "last.ckpt"

    assert main(["validate", "--config", "quickstart", *FAST, "--ckpt_path", str(ckpt)]) == 0
    val_run = run / "validate"  # beside the checkpoint's run, not a new version_N
    assert not (tmp_path / "runs" / "quickstart" / "version_1").exists()
    assert last_value(read_metrics(val_run), "val/loss") == pytest.approx(fit_val_loss, rel=1e-6)

    assert main(["export", str(ckpt), str(tmp_path / "hf")]) == 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf", local_files_only=True)
    run_tokenizer = AutoTokenizer.from_pretrained(run / "tokenizer", local_files_only=True)
    text = "The baker opened the shop early."
    assert tokenizer(text)["input_ids"] == run_tokenizer(text)["input_ids"]
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    exported = model.state_dict()
    for key, value in state.items():
        if key.startswith("backbone."):
            assert torch.equal(exported[key[len("backbone."):]], value), key
