"""Learning-rate schedules torch does not ship as one class."""

from __future__ import annotations

import math
import warnings

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the base learning rate at ``step``: linear warmup from 0, then cosine to ``min_lr_ratio``."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosineLR(LambdaLR):
    """Linear warmup, then cosine decay to ``min_lr_ratio`` of the base rate (the usual LLM schedule).

    Steps every optimizer step. Recipes use it as
    ``lr_scheduler: {class_path: lmforge.core.schedules.WarmupCosineLR, init_args: {warmup_steps: 100}}``.

    Args:
        warmup_steps: Steps of linear warmup.
        total_steps: Length of the schedule; None takes the trainer's
            estimated number of optimizer steps.
        min_lr_ratio: Final learning rate as a share of the base rate.
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int = 100, total_steps: int | None = None,
                 min_lr_ratio: float = 0.1) -> None:
        if warmup_steps < 0:
            raise ValueError(f"lr_scheduler.init_args.warmup_steps must be >= 0, got {warmup_steps}.")
        if total_steps is None:
            raise ValueError(
                "lr_scheduler.init_args.total_steps is None; in a recipe lmforge fills it from the trainer. "
                "Outside a recipe, pass the number of optimizer steps."
            )
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"lr_scheduler.init_args.min_lr_ratio must be in [0, 1], got {min_lr_ratio}.")
        if total_steps <= warmup_steps:
            warnings.warn(
                f"lr_scheduler.init_args.warmup_steps={warmup_steps} is not below the run's {total_steps} optimizer "
                "steps: the learning rate never reaches its base value. Lower warmup_steps.", stacklevel=2,
            )
        self.warmup_steps, self.total_steps, self.min_lr_ratio = warmup_steps, total_steps, min_lr_ratio
        super().__init__(optimizer, lambda step: warmup_cosine_factor(step, warmup_steps, total_steps, min_lr_ratio))
