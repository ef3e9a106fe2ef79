"""CosineHiddenDistillation: the plugin contract with a teacher given as an lmforge checkpoint and as an HF
directory, and the term against a teacher loaded with transformers and a plain cosine."""

import math

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from lmforge.testing import step_context
from lmforge_author_plugins.cosine_hidden_distillation import CosineHiddenDistillation, cosine_distance


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_keeps_the_plugin_contract_with_an_lmforge_checkpoint_as_teacher(lmforge_kit):
    for task in ("causal_lm", "masked_lm"):
        teacher = lmforge_kit.teacher(task, checkpoint=True)  # as `lmforge fit` leaves one
        assert teacher.endswith(".ckpt")
        report = lmforge_kit.check(CosineHiddenDistillation, init_args={"teacher": teacher}, tasks=[task])
        assert f"{task}: gradient flow" in report.passed


def test_keeps_the_plugin_contract_with_a_hugging_face_directory_as_teacher(lmforge_kit):
    lmforge_kit.check(CosineHiddenDistillation, init_args={"student_layer": 1, "teacher_layer": -1})


def test_cosine_distance_matches_a_plain_reference():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    expected = sum(1 - cosine(x, y) for x, y in zip(a.tolist(), b.tolist())) / 4
    assert float(cosine_distance(a, b)) == pytest.approx(expected, rel=1e-5)
    assert float(cosine_distance(a, 3 * a)) == pytest.approx(0.0, abs=1e-6)
    assert float(cosine_distance(torch.zeros(0, 6), torch.zeros(0, 6))) == 0.0


def test_the_term_is_the_cosine_distance_to_the_teacher_at_the_scored_positions(lmforge_kit):
    path = lmforge_kit.teacher("causal_lm")  # an HF directory: load it independently of the plugin
    plugin = CosineHiddenDistillation(teacher=path, alpha=0.5)
    ctx = step_context(plugin, kit=lmforge_kit)
    teacher = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        target = teacher(input_ids=ctx.batch["input_ids"], output_hidden_states=True).hidden_states[-1]
    student = ctx.outputs.hidden_states[-1].detach()
    labels = ctx.batch["labels"]
    distances = [1 - cosine(student[b, t].tolist(), target[b, t].tolist())
                 for b in range(labels.shape[0]) for t in range(labels.shape[1] - 1) if labels[b, t + 1] != -100]
    assert float(plugin.loss(ctx).detach()) == pytest.approx(0.5 * sum(distances) / len(distances), rel=1e-4)
    assert plugin.state_dict() == {}  # the same widths: no projection, and the teacher is not in it


def test_a_teacher_of_another_width_gets_a_trained_projection(lmforge_kit, tmp_path):
    path = lmforge_kit.teacher("causal_lm")  # the kit's tiny GPT-2; a wider one with the same tokenizer
    config = AutoConfig.from_pretrained(path)
    student_width = config.n_embd
    config.n_embd, config.n_head = student_width + 16, 1
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(path).save_pretrained(tmp_path)
    plugin = CosineHiddenDistillation(teacher=str(tmp_path))
    ctx = step_context(plugin, kit=lmforge_kit)
    assert list(plugin.state_dict()) == ["projection.weight"]
    assert plugin.state_dict()["projection.weight"].shape == (student_width + 16, student_width)
    plugin.loss(ctx).backward()
    assert plugin.projection.weight.grad is not None and bool(plugin.projection.weight.grad.abs().sum() > 0)


def test_a_teacher_of_another_objective_or_a_missing_layer_is_refused(lmforge_kit):
    masked = lmforge_kit.teacher("masked_lm", checkpoint=True)
    with pytest.raises(ValueError, match="must be a AutoModelForCausalLM .* got a AutoModelForMaskedLM"):
        step_context(CosineHiddenDistillation(teacher=masked), kit=lmforge_kit)
    teacher = lmforge_kit.teacher("causal_lm")
    states = AutoConfig.from_pretrained(teacher).num_hidden_layers + 1  # the embeddings, then each block
    with pytest.raises(ValueError, match=rf"teacher_layer must index the teacher's {states} hidden states "
                                         rf"\(-{states} to {states - 1}\), got {states}"):
        step_context(CosineHiddenDistillation(teacher=teacher, teacher_layer=states), kit=lmforge_kit)
