"""The debias recipes train a few steps: CDA and BalancedSampling run, and BiasProbe logs every bias type."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmforge.cli.main import main

FAST = ["--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1",
        "--trainer.enable_progress_bar", "false", "--data.init_args.batch_size", "4",
        "--data.init_args.block_size", "32"]  # the recipes' own vocabulary keeps probe sentences short


pytestmark = pytest.mark.usefixtures("one_thread")  # these small models run faster so than on two contended cores


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["debias-clm", "debias-mlm"])
def test_debias_recipe_logs_the_probe(recipe: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--config", recipe, *FAST]) == 0
    header = (tmp_path / "runs" / recipe / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"bias/gender", "bias/race", "bias/religion", "bias/age", "bias/overall", "val/loss"} <= set(header)
