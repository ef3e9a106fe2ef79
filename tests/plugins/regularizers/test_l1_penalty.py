"""L1Penalty against a hand sum of absolute values over hand-picked parameters."""

from __future__ import annotations

import pytest
import torch

from lmforge.core.plugins import StepContext
from lmforge.plugins.regularizers.l1_penalty import L1Penalty


def context(model) -> StepContext:
    return StepContext(batch={}, outputs=None, objective_loss=torch.zeros(()), model=model, forward=model)


def matrices(backbone, embeddings: tuple[str, ...]) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in backbone.named_parameters() if p.ndim == 2 and not n.startswith(embeddings)}


def test_l1_penalty_is_the_weighted_sum_of_absolute_values(make_model):
    penalty = L1Penalty(weight=0.5)
    model = make_model("gpt2", regularizers=[penalty])
    expected = matrices(model.backbone, ("transformer.wte", "transformer.wpe"))
    reference = 0.5 * sum(float(p.double().abs().sum()) for p in expected.values())
    term = penalty.loss(context(model))
    assert float(term.detach()) == pytest.approx(reference, rel=1e-5)
    term.backward()
    for name, param in model.backbone.named_parameters():
        if name in expected:
            torch.testing.assert_close(param.grad, 0.5 * torch.sign(param.detach()))
        else:
            assert param.grad is None, name
