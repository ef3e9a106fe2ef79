"""L2 penalty (Tikhonov regularization; weight decay as a loss term, Krogh & Hertz 1992).

Adds ``weight * sum(w ** 2)`` over the selected backbone parameters to the
loss (logged as ``loss/l2_penalty``).

When to use it rather than the optimizer's ``weight_decay``: under plain SGD
the two are the same thing (``weight_decay = 2 * weight``). Under Adam they are
not (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"): the
penalty's gradient ``2 * weight * w`` is divided by Adam's running RMS of the
gradient like any other gradient, so weights with large or noisy gradients are
barely shrunk and rarely updated ones are shrunk hard. AdamW's decoupled
``weight_decay`` shrinks every weight by ``lr * weight_decay`` per step,
independently of its gradient history, and generalizes better. So with Adam or
AdamW prefer ``optimizer.init_args.weight_decay`` (lmforge already exempts
biases and norms from it); use ``L2Penalty`` with SGD, to see the penalty as a
logged loss term, or to penalize a subset of parameters chosen by name.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lmforge.plugins.regularizers._parameters import WeightPenalty


def l2_penalty(params: Sequence[Tensor]) -> Tensor:
    """Sum of squares of every element of ``params`` (in float32)."""
    return torch.stack([p.float().pow(2).sum() for p in params]).sum()


class L2Penalty(WeightPenalty):
    """Adds weight * sum(w^2) over the backbone's weights (not biases, norms, embeddings).

    Args:
        weight: Multiplier of the sum of squares. Under Adam prefer the
            optimizer's decoupled ``weight_decay`` (see the module docs).
        skip_biases: Leave biases out.
        skip_norms: Leave normalization weights out (LayerNorm, RMSNorm, ...).
        skip_embeddings: Leave embedding tables out (and output layers tied to them).
        include: Regular expressions; when given, only parameters whose name
            (as in ``backbone.named_parameters()``, e.g. ``transformer.h.0.mlp.c_fc.weight``)
            matches one are covered.
        exclude: Regular expressions of parameter names to leave out.
    """

    def __init__(self, weight: float = 1.0e-4, skip_biases: bool = True, skip_norms: bool = True,
                 skip_embeddings: bool = True, include: list[str] | None = None,
                 exclude: list[str] | None = None) -> None:
        super().__init__(weight, skip_biases, skip_norms, skip_embeddings, include, exclude)

    penalty = staticmethod(l2_penalty)
