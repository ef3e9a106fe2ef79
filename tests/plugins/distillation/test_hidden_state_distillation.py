"""HiddenStateDistillation: layer map, projection, the cosine/MSE term against a plain reference,
zero for identical representations, and clear errors for a map naming a missing block."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmforge.core.backbone import Backbone
from lmforge.core.module import LanguageModel
from lmforge.plugins.distillation.hidden_state_distillation import (
    HiddenStateDistillation,
    hidden_state_distillation_loss,
    uniform_layer_map,
)
from lmforge.plugins.objectives.causal_lm import CausalLM

NO_DROPOUT = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}


def student(layers: int, width: int) -> Backbone:
    return Backbone("gpt2", {"n_layer": layers, "n_embd": width, "n_head": 2, "n_positions": 64, **NO_DROPOUT})


def reference(student_states, teacher_states, metric, mask) -> float:
    """Mean over pairs of the mean over counted positions, written position by position."""
    per_pair = []
    for s, t in zip(student_states, teacher_states):
        values = []
        for b, i in mask.nonzero().tolist():
            x, y = s[b, i].double(), t[b, i].double()
            if metric == "cosine":
                values.append(1.0 - float(x @ y / (x.norm() * y.norm())))
            else:
                values.append(float(((x - y) ** 2).sum()) / len(x))
        per_pair.append(sum(values) / len(values))
    return sum(per_pair) / len(per_pair)


@pytest.mark.parametrize("student_blocks, teacher_blocks, expected", [
    (2, 4, {0: 1, 1: 3}), (3, 6, {0: 1, 1: 3, 2: 5}), (2, 5, {0: 1, 1: 3}), (3, 3, {0: 0, 1: 1, 2: 2}),
    (1, 4, {0: 3}),
])
def test_uniform_layer_map(student_blocks: int, teacher_blocks: int, expected: dict[int, int]) -> None:
    assert uniform_layer_map(student_blocks, teacher_blocks) == expected


@pytest.mark.parametrize("metric", ["cosine", "mse"])
def test_loss_matches_a_plain_reference_over_non_padding_positions(metric: str) -> None:
    g = torch.Generator().manual_seed(0)
    s = [torch.randn(2, 5, 8, generator=g) for _ in range(2)]
    t = [torch.randn(2, 5, 8, generator=g) for _ in range(2)]
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    loss = hidden_state_distillation_loss(s, t, metric, mask)
    assert loss.item() == pytest.approx(reference(s, t, metric, mask), rel=1e-5)


@pytest.mark.parametrize("metric", ["cosine", "mse"])
def test_identical_representations_give_zero(metric: str) -> None:
    states = [torch.randn(2, 5, 8) for _ in range(3)]
    assert hidden_state_distillation_loss(states, [x.clone() for x in states], metric).item() == pytest.approx(0.0, abs=1e-6)


def test_unequal_depths_and_widths_get_a_map_and_a_trained_checkpointed_projection(
        make_teacher, tokenizer_dirs, build, fit, tmp_path) -> None:
    teacher = make_teacher("gpt2", layers=4, width=48)
    distiller = HiddenStateDistillation(str(teacher), metric="mse")
    model = build(LanguageModel(student(2, 32), CausalLM(), distiller=distiller,
                                optimizer={"class_path": "torch.optim.SGD", "init_args": {"lr": 0.5}}),
                  tokenizer_dirs["bpe"])
    assert distiller.pairs == [(0, 1), (1, 3)]
    assert isinstance(distiller.projection, nn.Linear)
    assert distiller.projection.weight.shape == (48, 32)  # student width 32 -> teacher width 48
    before = distiller.projection.weight.detach().clone()
    trainer = fit(model, tokenizer_dirs["bpe"], steps=2)
    assert not torch.equal(distiller.projection.weight, before)  # trained with the model
    trainer.save_checkpoint(tmp_path / "student.ckpt")
    state = torch.load(tmp_path / "student.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(state["distiller.projection.weight"], distiller.projection.weight)
    assert set(state) == set(model.state_dict())  # and nothing of the teacher


def test_equal_widths_need_no_projection(make_teacher, tokenizer_dirs, build) -> None:
    distiller = HiddenStateDistillation(str(make_teacher("gpt2", layers=2, width=32)))
    build(LanguageModel(student(1, 32), CausalLM(), distiller=distiller), tokenizer_dirs["bpe"])
    assert isinstance(distiller.projection, nn.Identity) and distiller.pairs == [(0, 1)]
    assert not any(k.startswith("distiller") for k in distiller.state_dict())


def test_loss_reads_the_mapped_blocks(make_teacher, tokenizer_dirs, fit, read_logged) -> None:
    """A student that is a copy of the teacher scores 0 on block i -> i and not on block 0 -> 1."""
    teacher = str(make_teacher("gpt2", layers=2, width=32))
    for layer_map, zero in [(None, True), ({0: 0, 1: 1}, True), ({0: 1}, False)]:
        model = LanguageModel(Backbone(init_from=teacher, layers=[0, 1]), CausalLM(),
                              distiller=HiddenStateDistillation(teacher, layer_map=layer_map))
        value = read_logged(fit(model, tokenizer_dirs["bpe"], steps=1))[0]["loss/hidden_state_distillation"]
        assert (value == pytest.approx(0.0, abs=1e-6)) == zero, layer_map


@pytest.mark.parametrize("layer_map, message", [
    ({0: 1, 2: 1}, "student block 2 but the student has 2 "),
    ({0: 4}, "teacher block 4 but the teacher has 4 "),
    ({-1: 0}, "student block -1"),
])
def test_a_layer_map_naming_a_missing_block_is_refused(layer_map, message, make_teacher, tokenizer_dirs,
                                                       build) -> None:
    distiller = HiddenStateDistillation(str(make_teacher("gpt2", layers=4, width=48)), layer_map=layer_map)
    with pytest.raises(ValueError, match=f"HiddenStateDistillation: layer_map must name existing blocks, got {message}"):
        build(LanguageModel(student(2, 32), CausalLM(), distiller=distiller), tokenizer_dirs["bpe"])


def test_a_teacher_shallower_than_the_student_needs_an_explicit_map(make_teacher, tokenizer_dirs, build) -> None:
    distiller = HiddenStateDistillation(str(make_teacher("gpt2", layers=2, width=32)))
    with pytest.raises(ValueError, match="Set layer_map explicitly"):
        build(LanguageModel(student(3, 32), CausalLM(), distiller=distiller), tokenizer_dirs["bpe"])
