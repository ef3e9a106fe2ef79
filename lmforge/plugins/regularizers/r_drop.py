"""R-Drop (Liang et al. 2021, "R-Drop: Regularized Dropout for Neural Networks").

Runs the backbone a second time on the same batch, so that dropout draws a
different mask, and adds ``alpha`` times the symmetric KL divergence between
the two passes' output distributions:

    loss/r_drop = alpha * mean over scored positions of
                  1/2 * (KL(p1 || p2) + KL(p2 || p1)),   KL summed over the vocabulary

The scored positions are the objective's (``Objective.scored_logits``): for
causal LM the logits at t that predict the label at t + 1, for masked LM the
masked positions; ignored labels (-100) and padding are left out. Gradients
flow through both passes, as in the paper. The paper also averages the two
passes' cross-entropy; lmforge keeps the objective's term on the first pass
only, so that ``loss/<objective>`` stays comparable with runs without R-Drop.
The method needs active dropout (the `Dropout` regularizer or the backbone's
own): with none, both passes agree and the term is zero.
"""

from __future__ import annotations

import warnings

import torch.nn.functional as F
from torch import Tensor

from lmforge.core.plugins import Regularizer, StepContext


def symmetric_kl(logits_a: Tensor, logits_b: Tensor) -> Tensor:
    """Mean over rows of ``(KL(p_a || p_b) + KL(p_b || p_a)) / 2`` with ``p = softmax(logits)``.

    Args:
        logits_a: (N, V) scores of the first pass.
        logits_b: (N, V) scores of the second pass.

    Returns:
        A scalar; zero (connected to the graph) when N is 0.
    """
    if logits_a.shape[0] == 0:
        return (logits_a.sum() + logits_b.sum()) * 0.0
    log_a = F.log_softmax(logits_a.float(), dim=-1)  # (N, V)
    log_b = F.log_softmax(logits_b.float(), dim=-1)
    # KL(a||b) + KL(b||a) = sum_v (p_a - p_b) * (log p_a - log p_b)
    per_row = ((log_a.exp() - log_b.exp()) * (log_a - log_b)).sum(-1)  # (N,)
    return 0.5 * per_row.mean()


class RDrop(Regularizer):
    """R-Drop: alpha * symmetric KL between two dropout passes over the scored positions.

    Args:
        alpha: Weight of the symmetric KL term (the paper uses 0.1 to 5; the
            term here is a per-token mean, on the scale of the cross-entropy).
    """

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        if not alpha > 0.0:
            raise ValueError(f"RDrop: alpha must be > 0, got {alpha}. Remove RDrop to turn it off.")
        self.alpha = alpha
        self._checked = False

    def loss(self, ctx: StepContext) -> Tensor:
        second = ctx.forward(ctx.batch)  # a different dropout mask: the global RNG has moved on
        kl = symmetric_kl(ctx.scored_logits(), ctx.scored_logits(second.logits))
        if not self._checked:
            self._checked = True
            if float(kl.detach()) == 0.0:
                warnings.warn("RDrop: both forward passes gave the same output, so the R-Drop term is 0. "
                              "Turn dropout on (the Dropout regularizer or the backbone's dropout config).",
                              stacklevel=2)
        return self.alpha * kl
