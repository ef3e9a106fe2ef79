"""Every bundled training recipe validates on held-out text and keeps watch with Lightning's
EarlyStopping and ModelCheckpoint on a validation metric (no hand-written early stopping)."""

from __future__ import annotations

import pytest
import yaml

from lmforge.cli.recipes import bundled_recipes

TRAINING_RECIPES = {name: path for name, path in bundled_recipes().items() if not name.startswith("overlays/")}


@pytest.mark.parametrize("name", sorted(TRAINING_RECIPES))
def test_recipe_validates_and_stops_early_on_the_validation_loss(name: str) -> None:
    recipe = yaml.safe_load(TRAINING_RECIPES[name].read_text(encoding="utf-8"))
    data = recipe["data"]["init_args"]
    assert data.get("val") or data.get("val_fraction"), "no held-out text"
    trainer = recipe["trainer"]
    assert trainer.get("val_check_interval") or trainer.get("check_val_every_n_epoch")
    entries = [{"class_path": c} if isinstance(c, str) else c for c in trainer["callbacks"]]
    callbacks = {c["class_path"].rsplit(".", 1)[-1]: c.get("init_args", {}) for c in entries}
    for callback in ("EarlyStopping", "ModelCheckpoint"):
        assert callback in callbacks, f"{name} has no {callback}"
        assert callbacks[callback]["monitor"].startswith("val/"), callbacks[callback]
