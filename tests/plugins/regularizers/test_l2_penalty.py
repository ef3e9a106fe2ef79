"""L2Penalty against a hand sum of squares over hand-picked parameters (the selection is shared with L1Penalty)."""

from __future__ import annotations

import pytest
import torch

from lmforge.core.plugins import StepContext
from lmforge.plugins.regularizers.l2_penalty import L2Penalty


def context(model) -> StepContext:
    """The penalties read only ``ctx.model``."""
    return StepContext(batch={}, outputs=None, objective_loss=torch.zeros(()), model=model, forward=model)


def matrices(backbone, embeddings: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """By hand: 2-D weights that are not embedding tables (biases and norm gains are 1-D in these models)."""
    return {n: p.detach() for n, p in backbone.named_parameters() if p.ndim == 2 and not n.startswith(embeddings)}


@pytest.mark.parametrize(("architecture", "embeddings"), [
    ("gpt2", ("transformer.wte", "transformer.wpe")),
    ("llama", ("model.embed_tokens",)),
])
def test_l2_penalty_is_the_weighted_sum_of_squares_of_the_weight_matrices(make_model, architecture, embeddings):
    penalty = L2Penalty(weight=0.01)
    model = make_model(architecture, regularizers=[penalty])
    expected = matrices(model.backbone, embeddings)
    assert sorted(penalty.parameter_names) == sorted(expected)
    if architecture == "llama":  # untied output layer: a weight matrix like any other
        assert "lm_head.weight" in penalty.parameter_names
    reference = 0.01 * sum(float((p.double() ** 2).sum()) for p in expected.values())
    term = penalty.loss(context(model))
    assert float(term.detach()) == pytest.approx(reference, rel=1e-5)

    term.backward()
    for name, param in model.backbone.named_parameters():
        if name in expected:
            torch.testing.assert_close(param.grad, 2 * 0.01 * param.detach())
        else:
            assert param.grad is None, name


def test_name_patterns_and_category_switches(make_model):
    penalty = L2Penalty(exclude=[r"\.mlp\."])
    make_model("gpt2", regularizers=[penalty])
    assert penalty.parameter_names == ["transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_proj.weight",
                                       "transformer.h.1.attn.c_attn.weight", "transformer.h.1.attn.c_proj.weight"]

    only = L2Penalty(include=[r"^transformer\.h\.1\.mlp"], skip_biases=False)
    make_model("gpt2", regularizers=[only])
    assert only.parameter_names == ["transformer.h.1.mlp.c_fc.weight", "transformer.h.1.mlp.c_fc.bias",
                                    "transformer.h.1.mlp.c_proj.weight", "transformer.h.1.mlp.c_proj.bias"]

    everything = L2Penalty(skip_biases=False, skip_norms=False, skip_embeddings=False)
    model = make_model("gpt2", regularizers=[everything])
    assert everything.parameter_names == [n for n, _ in model.backbone.named_parameters()]


def test_under_sgd_the_penalty_equals_weight_decay_of_twice_its_weight(make_model):
    """The module docs' claim: SGD + L2Penalty(w) takes the same step as SGD(weight_decay=2w) on those weights."""
    penalty = L2Penalty(weight=0.05, skip_biases=False, skip_norms=False, skip_embeddings=False)
    model = make_model("gpt2", regularizers=[penalty])
    start = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    optimizer = torch.optim.SGD(model.backbone.parameters(), lr=0.1)
    penalty.loss(context(model)).backward()
    optimizer.step()
    for name, param in model.backbone.named_parameters():
        reference = torch.nn.Parameter(start[name].clone())
        reference.grad = torch.zeros_like(reference)
        torch.optim.SGD([reference], lr=0.1, weight_decay=0.1).step()
        torch.testing.assert_close(param.detach(), reference.detach())


def test_bad_settings_are_refused(make_model):
    with pytest.raises(ValueError, match="weight must be >= 0"):
        L2Penalty(weight=-1.0)
    with pytest.raises(ValueError, match="exclude must hold regular expressions"):
        L2Penalty(exclude=["("])
    with pytest.raises(ValueError, match="no backbone parameter is selected"):
        make_model("gpt2", regularizers=[L2Penalty(include=["nothing-matches"])])
