"""The regularized-clm recipe trains a few steps with every piece it advertises."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from lmforge.cli.main import main
from lmforge.cli.training import run_cli
from lmforge.cli.recipes import bundled_recipes

FAST = ["--trainer.max_steps", "4", "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "2",
        "--trainer.enable_progress_bar", "false", "--data.init_args.batch_size", "4",
        "--data.init_args.block_size", "32", "--data.init_args.tokenizer.train.vocab_size", "300",
        "--trainer.log_every_n_steps", "1"]


def test_recipe_holds_the_advertised_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lmforge"])
    cli = run_cli(["--config", str(bundled_recipes()["regularized-clm"])], run=False)
    assert [type(p).__name__ for p in cli.model.regularizers] == ["Dropout", "RDrop"]
    assert [type(p).__name__ for p in cli.model.augmenters] == ["SynonymReplacement", "TokenNoise"]
    assert cli.model.optimizer_init["init_args"]["weight_decay"] > 0
    callbacks = {type(c).__name__: c for c in cli.trainer.callbacks}
    assert callbacks["EarlyStopping"].monitor == "val/loss" and callbacks["ModelCheckpoint"].monitor == "val/loss"


@pytest.mark.slow
def test_recipe_trains_and_logs_each_term(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--config", "regularized-clm", *FAST]) == 0
    run = tmp_path / "runs" / "regularized-clm" / "version_0"
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    logged = {k for row in rows for k, v in row.items() if v}
    assert {"loss/total", "loss/causal_lm", "loss/r_drop", "val/loss"} <= logged
    assert any(float(r["loss/r_drop"]) > 0 for r in rows if r.get("loss/r_drop"))
    config = (run / "config.yaml").read_text()
    assert "SynonymReplacement" in config and "TokenNoise" in config
