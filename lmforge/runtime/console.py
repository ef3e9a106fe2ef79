"""What a training command shows on the console: no third-party noise, and a progress bar that reads right.

`quiet_third_party_noise` drops messages that users cannot act on: Lightning's litlogger advertisement, known
deprecation warnings raised inside Lightning and torch (not by the user's code), FSDP2's note about view
outputs of wrapped modules, and Lightning's warnings that do not hold for lmforge (its DataModules resume
mid-epoch; a resumed run writes into its own checkpoint directory; an evaluation logs beside the checkpoint's
run). Every other warning is kept. `progress_bar` is Lightning's default progress bar
(Rich when installed, else tqdm) without the logger's version number (``v_num``), and, when the run trains by
steps (``max_epochs`` unset), without an epoch count of ``-2`` ("Epoch 3/-2").
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from lightning.pytorch.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE

#: Lightning INFO messages that are advertisements, not information about the run.
NOISE_MESSAGES = (
    "try installing [litlogger]",
)
#: Warnings raised inside Lightning or torch that say nothing about the user's run or recipe.
NOISE_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning's pytree helper on torch >= 2.10
    r"FSDP2-wrapped module \(\w+\) returned a view tensor",  # fully_shard on HF models that return views
)
#: Warnings that do not hold for lmforge: its DataModules resume mid-epoch themselves (their ``state_dict``), and
#: `LanguageModel` logs ``val/*``/``test/*`` from torchmetrics that already reduce over the ranks.
DATA_NOISE_WARNINGS = (
    r"You're resuming from a checkpoint that ended before the epoch ended and your dataloader is not resumable",
    r"It is recommended to use `self.log\('(val|test)/[\w/]+', \.\.\., sync_dist=True\)`",
)
#: Warnings that are noise when a run continues in its own directory (``fit --ckpt_path last``).
RESUME_NOISE_WARNINGS = (
    r"Checkpoint directory .* exists and is not empty",
)
#: Warnings that are noise when a command only evaluates (validate, test) a checkpoint.
EVALUATION_NOISE_WARNINGS = (
    r"The dirpath has changed from",  # ModelCheckpoint, when the evaluation logs beside the checkpoint's run
)
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")


class _DropMessages(logging.Filter):
    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def quiet_third_party_noise(subcommand: str | None = None) -> None:
    """Install the filters (warnings and Lightning's log handlers) for this process."""
    for pattern in (*NOISE_WARNINGS, *DATA_NOISE_WARNINGS):
        warnings.filterwarnings("ignore", message=pattern)
    if subcommand in ("validate", "test"):
        for pattern in EVALUATION_NOISE_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
    noise = _DropMessages(NOISE_MESSAGES)
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        for target in [logger, *logger.handlers]:
            if not any(isinstance(f, _DropMessages) for f in target.filters):
                target.addFilter(noise)


def quiet_resume_noise() -> None:
    """Filters for a run that continues in its own run directory."""
    for pattern in RESUME_NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


def _is_unbounded(max_epochs: int | None) -> bool:
    return max_epochs is None or max_epochs < 0


class _LMForgeBar:
    """The metrics and description tweaks shared by both progress bars."""

    def get_metrics(self, trainer: Any, pl_module: Any) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)  # type: ignore[misc]
        items.pop("v_num", None)  # the run directory's version number: not a metric
        return items


class StepProgressBar(_LMForgeBar, RichProgressBar):
    """Lightning's Rich progress bar; ``Epoch N`` alone when the run trains by steps."""

    def _get_train_description(self, current_epoch: int) -> str:
        if not _is_unbounded(self.trainer.max_epochs):
            return super()._get_train_description(current_epoch)
        description = f"Epoch {current_epoch}"
        if len(self.validation_description) > len(description):
            description = f"{description:{len(self.validation_description)}}"  # as Rich pads it: no flicker
        return description


class StepTQDMProgressBar(_LMForgeBar, TQDMProgressBar):
    """Lightning's tqdm progress bar without ``v_num``."""


def progress_bar() -> ProgressBar:
    """The progress bar lmforge's commands use when the recipe names none."""
    return StepProgressBar() if _RICH_AVAILABLE else StepTQDMProgressBar()

