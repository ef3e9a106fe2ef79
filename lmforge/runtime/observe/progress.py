"""Progress bars that read the run's values on the host at logging steps only.

Lightning converts every progress-bar value (``self.log(..., prog_bar=True)``) to a Python number at the end
of every batch, a host read that waits for the device each step. lmforge logs its training values without
``prog_bar`` and these bars show them instead, read from ``trainer.callback_metrics`` when the bar refreshes:
at the trainer's logging steps (``trainer.log_every_n_steps``) and at the ends of epochs and validation.
`progress_bar_for` swaps Lightning's default bar (Rich when ``rich`` is installed, else tqdm) for its
counterpart here; a bar the recipe names is left alone.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar

from lmforge.runtime.observe.throughput import PROGRESS_BAR_KEY

#: Training values the bars show, read from ``trainer.callback_metrics`` when they refresh.
SHOWN = ("loss/total", PROGRESS_BAR_KEY)


def _with_training_values(items: dict[str, Any], trainer: Trainer) -> dict[str, Any]:
    metrics = trainer.callback_metrics
    for key in SHOWN:
        if key in metrics and key not in items:
            value = metrics[key]
            items[key] = value.item() if hasattr(value, "item") else value
    return items


class LoggingStepTQDMProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, refreshed every ``trainer.log_every_n_steps`` batches, showing ``loss/total`` and
    ``tok/s``."""

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        return _with_training_values(super().get_metrics(trainer, pl_module), trainer)


class LoggingStepRichProgressBar(RichProgressBar):
    """Lightning's Rich bar; its position moves every batch, its values change at logging steps."""

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer._logger_connector.should_update_logs:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        if not self.is_disabled and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()
        self._update(self.train_progress_bar_id, batch_idx + 1)
        self.refresh()

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        return _with_training_values(super().get_metrics(trainer, pl_module), trainer)


def progress_bar_for(trainer: Trainer, named: list[Any]) -> None:
    """Replace ``trainer``'s default progress bar by the one here that refreshes at logging steps; ``named``:
    the callbacks the recipe names (a bar among them is kept as it is)."""
    if any(isinstance(c, ProgressBar) for c in named):
        return
    every = max(1, trainer.log_every_n_steps)
    for i, callback in enumerate(trainer.callbacks):
        if type(callback) is TQDMProgressBar:
            trainer.callbacks[i] = LoggingStepTQDMProgressBar(refresh_rate=every)
        elif type(callback) is RichProgressBar:
            trainer.callbacks[i] = LoggingStepRichProgressBar()
