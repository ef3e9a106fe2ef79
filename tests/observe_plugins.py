"""A test-local plugin that the observed run's recipe names by import path."""

from __future__ import annotations

import torch

from lmforge.core.plugins import Regularizer, StepContext


class WeightPenalty(Regularizer):
    """A second loss term (not a registered plugin: its distribution is unknown)."""

    def __init__(self, weight: float = 1e-3) -> None:
        super().__init__()
        self.weight = weight

    def loss(self, ctx: StepContext) -> torch.Tensor:
        return self.weight * sum(p.pow(2).sum() for p in ctx.model.backbone.parameters())
