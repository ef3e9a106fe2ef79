"""ConfidencePenalty: the confidence penalty of Pereyra et al. 2017, "Regularizing Neural Networks by
Penalizing Confident Output Distributions".

The term is ``-beta * H(p)``, the mean entropy of the model's output distribution
``p = softmax(logits)`` taken with a minus sign, so minimizing the loss raises the
entropy and discourages over-confident predictions. It is averaged over the
positions the objective scores (``ctx.scored_logits()``): the positions a causal
LM predicts, the masked tokens of a masked LM, the tagged tokens, or one row per
example for sequence classification. Padding and unscored tokens never count.
The mean entropy is also logged as a metric (``metric/confidence_penalty/entropy``),
beside the term and not added to the loss.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lmforge.core.plugins import LossOutput, Regularizer, StepContext


def mean_entropy(logits: Tensor) -> Tensor:
    """Mean over rows of the entropy of ``softmax(logits)``, in nats; logits (N, V). 0 for no rows."""
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    log_p = F.log_softmax(logits.float(), dim=-1)  # (N, V)
    return -(log_p.exp() * log_p).sum(-1).mean()


class ConfidencePenalty(Regularizer):
    """Penalizes confident output distributions: -beta * mean entropy over the scored positions (Pereyra 2017).

    Args:
        beta: Weight of the entropy term (Pereyra et al. use 0.1 to 2 for language models; start small).
    """

    def __init__(self, beta: float = 0.1) -> None:
        super().__init__()
        if beta < 0:
            raise ValueError(f"ConfidencePenalty: beta must be >= 0, got {beta}. Remove ConfidencePenalty to turn "
                             "it off.")
        self.beta = beta

    def loss(self, ctx: StepContext) -> LossOutput:
        """Loss stage: ``loss/confidence_penalty``, with the mean entropy as a metric."""
        entropy = mean_entropy(ctx.scored_logits())  # over the (N, V) scored rows
        return LossOutput(-self.beta * entropy, metrics={"entropy": entropy.detach()})
