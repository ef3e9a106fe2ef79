"""L1 penalty (lasso; Tibshirani 1996).

Adds ``weight * sum(|w|)`` over the selected backbone parameters to the loss
(logged as ``loss/l1_penalty``). Its gradient ``weight * sign(w)`` has a
constant size, so it drives small weights to zero and favours sparse weights,
where an L2 penalty only shrinks them in proportion. With Adam the same caveat
as for `L2Penalty` holds: the gradient is rescaled per parameter, so the
penalty does not act uniformly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lmforge.plugins.regularizers._parameters import WeightPenalty


def l1_penalty(params: Sequence[Tensor]) -> Tensor:
    """Sum of absolute values of every element of ``params`` (in float32)."""
    return torch.stack([p.float().abs().sum() for p in params]).sum()


class L1Penalty(WeightPenalty):
    """Adds weight * sum(|w|) over the backbone's weights (not biases, norms, embeddings).

    Args:
        weight: Multiplier of the sum of absolute values.
        skip_biases: Leave biases out.
        skip_norms: Leave normalization weights out (LayerNorm, RMSNorm, ...).
        skip_embeddings: Leave embedding tables out (and output layers tied to them).
        include: Regular expressions; when given, only parameters whose name
            (as in ``backbone.named_parameters()``) matches one are covered.
        exclude: Regular expressions of parameter names to leave out.
    """

    def __init__(self, weight: float = 1.0e-6, skip_biases: bool = True, skip_norms: bool = True,
                 skip_embeddings: bool = True, include: list[str] | None = None,
                 exclude: list[str] | None = None) -> None:
        super().__init__(weight, skip_biases, skip_norms, skip_embeddings, include, exclude)

    penalty = staticmethod(l1_penalty)
