"""`lmforge.runtime.console`: the progress bar shows no ``v_num`` and no ``Epoch N/-2``; third-party noise is
dropped and real warnings are kept."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.loggers import CSVLogger

from lmforge.runtime.console import StepProgressBar, StepTQDMProgressBar, quiet_third_party_noise


@pytest.mark.parametrize("bar_class", [StepProgressBar, StepTQDMProgressBar])
def test_progress_bar_of_a_run_by_steps(bar_class, tmp_path: Path) -> None:
    bar = bar_class()
    trainer = Trainer(max_steps=2, limit_val_batches=0, logger=CSVLogger(tmp_path), callbacks=[bar],
                      enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(BoringModel())
    assert trainer.max_epochs == -1  # a run by steps, as every bundled recipe
    assert "v_num" not in bar.get_metrics(trainer, trainer.lightning_module)
    reference = {RichProgressBar: RichProgressBar, TQDMProgressBar: TQDMProgressBar}
    base = next(cls for cls in bar_class.__mro__ if cls in reference)
    assert "v_num" in base.get_metrics(bar, trainer, trainer.lightning_module)  # what Lightning's own shows
    if bar_class is StepProgressBar:
        assert bar._get_train_description(3).strip() == "Epoch 3"
        assert RichProgressBar._get_train_description(bar, 3) == "Epoch 3/-2"  # Lightning's, for comparison


def test_epoch_count_stays_when_the_run_has_one(tmp_path: Path) -> None:
    bar = StepProgressBar()
    Trainer(max_epochs=2, limit_train_batches=1, limit_val_batches=0, logger=False, callbacks=[bar],
            enable_model_summary=False, enable_checkpointing=False).fit(BoringModel())
    assert bar._get_train_description(1).strip() == "Epoch 1/1"


def test_noise_is_dropped_and_real_warnings_are_kept() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_third_party_noise("validate")  # catch_warnings restores the filters on exit
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)`",
                      DeprecationWarning)
        warnings.warn("The dirpath has changed from 'a' to 'b'", UserWarning)
        warnings.warn("It is recommended to use `self.log('val/loss', ..., sync_dist=True)` when logging on epoch "
                      "level in distributed setting to accumulate the metric across devices.", UserWarning)
        warnings.warn("model.backbone.config: something real", UserWarning)
    assert [str(w.message) for w in caught] == ["model.backbone.config: something real"]
    handler = logging.getLogger("lightning.pytorch").handlers[0]
    tip = logging.LogRecord("lightning.pytorch.utilities.rank_zero", logging.INFO, __file__, 1,
                            "💡 Tip: ... try installing [litlogger](https://pypi.org/project/litlogger/) ...", None, None)
    real = logging.LogRecord("lightning.pytorch.utilities.rank_zero", logging.INFO, __file__, 1,
                             "`Trainer.fit` stopped: `max_steps=6` reached.", None, None)
    assert not handler.filter(tip) and handler.filter(real)
