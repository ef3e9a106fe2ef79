"""z-loss (Chowdhery et al. 2022, "PaLM: Scaling Language Modeling with Pathways", section 5).

An auxiliary term ``weight * log(Z)^2`` per predicted token, ``Z`` the
softmax normalizer (``log Z = logsumexp`` of the logits), which pulls
``log Z`` toward 0 and keeps the logits from drifting, for training
stability; PaLM uses ``weight = 1e-4``. Here it is averaged over the positions
the objective scores (``Objective.scored_logits``): for causal LM the
positions that predict a next token, for masked LM the masked ones.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from lmforge.core.plugins import Regularizer, StepContext


def z_loss(logits: Tensor) -> Tensor:
    """Mean over rows of ``logsumexp(logits)^2``.

    Args:
        logits: (N, V) scores, one row per scored position.

    Returns:
        A scalar; zero (connected to the graph) when N is 0.
    """
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    log_z = torch.logsumexp(logits.float(), dim=-1)  # (N,)
    return log_z.pow(2).mean()


class ZLoss(Regularizer):
    """PaLM's z-loss: weight * mean(log(Z)^2) over the scored positions, Z the softmax normalizer.

    Args:
        weight: Multiplier of the term (PaLM: 1e-4).
    """

    #: The term is defined on a softmax over the vocabulary.
    supported_objectives: ClassVar[tuple[str, ...] | None] = ("causal_lm", "masked_lm")

    def __init__(self, weight: float = 1.0e-4) -> None:
        super().__init__()
        if not weight > 0.0:
            raise ValueError(f"ZLoss: weight must be > 0, got {weight}. Remove ZLoss to turn it off.")
        self.weight = weight

    def loss(self, ctx: StepContext) -> Tensor:
        logits = ctx.scored_logits()  # (N, V)
        return self.weight * z_loss(logits)
