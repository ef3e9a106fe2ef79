"""LogitDistillation: the KL term against torch.nn.functional.kl_div, the positions it counts,
a frozen teacher that never reaches the student's checkpoint, and clear errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer
from tiny import TINY_BERT, TINY_GPT2

from lmforge.core.backbone import Backbone
from lmforge.core.module import LanguageModel
from lmforge.plugins.distillation.logit_distillation import (
    IGNORE_INDEX,
    LogitDistillation,
    distillation_positions,
    logit_distillation_loss,
)
from lmforge.plugins.objectives.causal_lm import CausalLM
from lmforge.plugins.objectives.masked_lm import MaskedLM

B, T, V = 3, 6, 13
STUDENT = Backbone("gpt2", {**TINY_GPT2.config, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0})


def reference_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float, mask: torch.Tensor,
                 reverse: bool = False) -> float:
    """T^2 * mean over counted positions of KL(p || q), one F.kl_div per position."""
    total, count = 0.0, 0
    for b, t in mask.nonzero().tolist():
        p = F.softmax(teacher[b, t].double() / temperature, dim=-1)
        log_q = F.log_softmax(student[b, t].double() / temperature, dim=-1)
        if reverse:
            p, log_q = F.softmax(student[b, t].double() / temperature, -1), F.log_softmax(teacher[b, t].double() / temperature, -1)
        total += float(F.kl_div(log_q, p, reduction="sum"))  # sum_v p_v (log p_v - log q_v)
        count += 1
    return temperature**2 * total / count


@pytest.fixture
def logits() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(B, T, V, generator=g) * 2, torch.randn(B, T, V, generator=g) * 2


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kl_term_matches_kl_div_with_t_squared_and_padding(logits, temperature: float, reverse: bool) -> None:
    student, teacher = logits
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, 4:] = False  # padding at the end of the first row
    mask[2, :] = False  # an all-padding row counts nothing
    loss = logit_distillation_loss(student, teacher, temperature, mask, reverse=reverse)
    assert loss.item() == pytest.approx(reference_kl(student, teacher, temperature, mask, reverse), rel=1e-5)
    # The masked positions really are ignored: changing them changes nothing.
    noisy = student.clone()
    noisy[~mask] += 100 * torch.randn_like(noisy[~mask])
    assert logit_distillation_loss(noisy, teacher, temperature, mask, reverse=reverse).item() == pytest.approx(loss.item())


def test_reverse_is_the_kl_the_other_way_round_and_only_the_student_gets_gradients(logits) -> None:
    student, teacher = logits
    reverse = logit_distillation_loss(student, teacher, 2.0, reverse=True)
    # KL(student || teacher) is the forward KL with the two swapped; on these logits the two directions differ.
    assert reverse.item() == pytest.approx(logit_distillation_loss(teacher, student, 2.0).item(), rel=1e-5)
    assert abs(reverse.item() - logit_distillation_loss(student, teacher, 2.0).item()) > 0.01 * reverse.item()
    for direction in (False, True):
        s, t = student.clone().requires_grad_(True), teacher.clone().requires_grad_(True)
        logit_distillation_loss(s, t, 2.0, reverse=direction).backward()
        assert t.grad is None, direction  # the teacher is a target, in both directions
        assert s.grad is not None and bool(s.grad.abs().sum() > 0), direction


def test_identical_logits_give_zero_and_no_positions_give_a_zero_with_a_graph(logits) -> None:
    student, _ = logits
    assert logit_distillation_loss(student, student.clone(), 1.0).item() == pytest.approx(0.0, abs=1e-6)
    leaf = student.clone().requires_grad_(True)
    none = logit_distillation_loss(leaf, student, 2.0, torch.zeros(B, T, dtype=torch.bool))
    none.backward()
    assert none.item() == 0.0 and leaf.grad is not None


def test_causal_positions_are_those_with_a_next_label() -> None:
    attention = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    labels = torch.tensor([[5, 6, 7, 8], [5, 6, IGNORE_INDEX, IGNORE_INDEX]])
    batch = {"input_ids": torch.zeros(2, 4, dtype=torch.long), "attention_mask": attention, "labels": labels}
    expected = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(distillation_positions(batch, causal=True), expected)


def test_masked_lm_positions_all_tokens_or_only_the_masked() -> None:
    attention = torch.tensor([[1, 1, 1, 0]])
    labels = torch.tensor([[IGNORE_INDEX, 9, IGNORE_INDEX, IGNORE_INDEX]])
    batch = {"input_ids": torch.zeros(1, 4, dtype=torch.long), "attention_mask": attention, "labels": labels}
    assert distillation_positions(batch, causal=False).tolist() == [[True, True, True, False]]
    assert distillation_positions(batch, causal=False, masked_only=True).tolist() == [[False, True, False, False]]


def test_identical_teacher_and_student_at_t1_alpha1_give_zero(make_teacher, tokenizer_dirs, fit, read_logged) -> None:
    teacher = make_teacher("gpt2", layers=2)
    student = Backbone(init_from=str(teacher), layers=[0, 1])  # the whole teacher: the same network
    model = LanguageModel(student, CausalLM(), distiller=LogitDistillation(str(teacher), temperature=1.0, alpha=1.0))
    rows = read_logged(fit(model, tokenizer_dirs["bpe"], steps=1))
    assert rows[0]["loss/logit_distillation"] == pytest.approx(0.0, abs=1e-6)


def test_hard_loss_weight_scales_the_objective_term(make_teacher, tokenizer_dirs, fit, read_logged) -> None:
    teacher = make_teacher("gpt2", layers=2)
    distiller = LogitDistillation(str(teacher), temperature=2.0, alpha=0.7, hard_loss_weight=0.25)
    rows = read_logged(fit(LanguageModel(STUDENT, CausalLM(), distiller=distiller), tokenizer_dirs["bpe"], steps=2))
    for row in rows:
        if "loss/total" not in row:
            continue
        # metric/perplexity is exp(unweighted objective loss); the logged objective term is weighted.
        assert row["loss/causal_lm"] == pytest.approx(0.25 * math.log(row["metric/perplexity"]), rel=1e-4)
        assert row["loss/total"] == pytest.approx(row["loss/causal_lm"] + row["loss/logit_distillation"], rel=1e-5)
        assert row["loss/logit_distillation"] > 0


def test_teacher_gets_no_gradient_stays_unchanged_and_is_not_checkpointed(
        tokenizer_dirs, fit, build, tmp_path) -> None:
    from lmforge.core.checkpoint import backbone_state_dict, load_checkpoint

    # The teacher is an lmforge checkpoint, as `lmforge fit --config clm-pretrain` leaves one.
    teacher_model = LanguageModel(Backbone("gpt2", {**STUDENT.config, "n_layer": 2}), CausalLM())
    fit(teacher_model, tokenizer_dirs["bpe"], steps=1).save_checkpoint(tmp_path / "teacher.ckpt")
    saved = backbone_state_dict(load_checkpoint(tmp_path / "teacher.ckpt"))

    distiller = LogitDistillation(str(tmp_path / "teacher.ckpt"))
    model = build(LanguageModel(STUDENT, CausalLM(), distiller=distiller,
                                optimizer={"class_path": "torch.optim.SGD", "init_args": {"lr": 1.0}}),
                  tokenizer_dirs["bpe"])
    student_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    trainer = fit(model, tokenizer_dirs["bpe"], steps=3)

    teacher = distiller._teacher.model
    assert not teacher.training
    for name, p in teacher.named_parameters():
        assert not p.requires_grad and p.grad is None, name
    for name, value in teacher.state_dict().items():
        assert torch.equal(value, saved[name]), name
    assert any(not torch.equal(v, student_before[k]) for k, v in model.backbone.state_dict().items())

    trainer.save_checkpoint(tmp_path / "student.ckpt")
    state = torch.load(tmp_path / "student.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert set(state) == set(model.state_dict())
    assert all(k.startswith("backbone.") for k in state)  # the logit distiller has no parameters
    assert sum(v.numel() for v in state.values()) == sum(v.numel() for v in student_before.values())


def test_missing_teacher_fails_at_setup_naming_the_key(tokenizer_dirs, build, tmp_path) -> None:
    distiller = LogitDistillation(str(tmp_path / "runs" / "nothing.ckpt"))  # constructing does not look
    with pytest.raises(FileNotFoundError, match=r"model\.distiller\.init_args\.teacher: .*does not exist.*lmforge fit"):
        build(LanguageModel(STUDENT, CausalLM(), distiller=distiller), tokenizer_dirs["bpe"])


def test_vocabulary_mismatch_is_refused_naming_both_sizes(make_teacher, tokenizer_dirs, build) -> None:
    teacher = make_teacher("gpt2", layers=2, tokenizer="bpe")  # 400 tokens; the student uses 300
    model = LanguageModel(STUDENT, CausalLM(), distiller=LogitDistillation(str(teacher)))
    with pytest.raises(ValueError, match=r"model\.distiller\.init_args\.teacher: .*400 tokens vs this run's 300.*"
                                         r"data\.init_args\.tokenizer\.path"):
        build(model, tokenizer_dirs["bpe_small"])


def test_a_teacher_of_another_objective_is_refused(make_teacher, tokenizer_dirs, build, tmp_path) -> None:
    bert = TINY_BERT
    trainer = Trainer(accelerator="cpu", logger=False, max_steps=0)
    mlm = build(LanguageModel(bert, MaskedLM()), tokenizer_dirs["wordpiece"])
    trainer.strategy.connect(mlm)
    trainer.save_checkpoint(tmp_path / "mlm.ckpt")
    clm = LanguageModel(STUDENT, CausalLM(), distiller=LogitDistillation(str(tmp_path / "mlm.ckpt")))
    with pytest.raises(ValueError, match="must be a AutoModelForCausalLM .* got a AutoModelForMaskedLM"):
        build(clm, tokenizer_dirs["wordpiece"])


def test_masked_only_with_a_causal_objective_is_refused(make_teacher, tokenizer_dirs, build) -> None:
    model = LanguageModel(STUDENT, CausalLM(), distiller=LogitDistillation(str(make_teacher()), masked_only=True))
    with pytest.raises(ValueError, match="masked_only must be false"):
        build(model, tokenizer_dirs["bpe"])


@pytest.mark.parametrize("kwargs", [{"temperature": 0.0}, {"alpha": -1.0}, {"hard_loss_weight": -0.5}])
def test_bad_arguments_are_refused(kwargs) -> None:
    with pytest.raises(ValueError, match="LogitDistillation: "):
        LogitDistillation("teacher", **kwargs)


def reference_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float, mask: torch.Tensor,
                   reverse: bool) -> torch.Tensor:
    """T^2 * the masked mean of KL(softmax(t/T) || softmax(s/T)) (or the reverse), written out in float64."""
    log_p = F.log_softmax(teacher.double() / temperature, dim=-1)
    log_q = F.log_softmax(student.double() / temperature, dim=-1)
    if reverse:
        log_p, log_q = log_q, log_p
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    weights = mask.double()
    return temperature**2 * (kl * weights).sum() / weights.sum()


@pytest.mark.parametrize("chunk", [1 << 18, 2 * V])  # every row at once; two rows at a time (several chunks)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
def test_gradient_matches_autograd_through_the_written_out_kl(logits, temperature: float, reverse: bool, chunk: int,
                                                               monkeypatch) -> None:
    import lmforge.plugins.distillation.logit_distillation as module

    monkeypatch.setattr(module, "CHUNK_VALUES", chunk)
    student, teacher = logits
    mask = torch.rand(B, T, generator=torch.Generator().manual_seed(1)) > 0.3
    ours = student.clone().requires_grad_(True)
    loss = logit_distillation_loss(ours, teacher, temperature, mask, reverse=reverse)
    loss.backward()
    theirs = student.double().requires_grad_(True)
    expected = reference_loss(theirs, teacher, temperature, mask, reverse)
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(ours.grad.double(), theirs.grad, rtol=1e-4, atol=1e-7)
    assert bool((ours.grad[~mask] == 0).all())  # positions that do not count get no gradient


def test_half_precision_student_logits_get_a_gradient_of_their_dtype(logits) -> None:
    student, teacher = logits
    ours = student.bfloat16().requires_grad_(True)
    loss = logit_distillation_loss(ours, teacher.bfloat16(), 2.0)
    loss.backward()
    theirs = ours.detach().double().requires_grad_(True)
    reference_loss(theirs, teacher.bfloat16(), 2.0, torch.ones(B, T, dtype=torch.bool), False).backward()
    assert loss.dtype == torch.float32 and ours.grad.dtype == torch.bfloat16
    torch.testing.assert_close(ours.grad.double(), theirs.grad, rtol=1e-2, atol=1e-4)


def test_the_teacher_runs_in_inference_mode_with_gpt2s_fused_gelu_and_the_same_logits(make_teacher) -> None:
    from transformers import AutoModelForCausalLM

    from lmforge.core.teacher import FrozenTeacher

    directory = make_teacher("gpt2", layers=2)
    original = AutoModelForCausalLM.from_pretrained(str(directory)).eval()
    teacher = FrozenTeacher(AutoModelForCausalLM.from_pretrained(str(directory)))
    ids = torch.randint(0, original.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    logits = teacher.logits(inputs)
    with torch.no_grad():
        expected = original(**inputs).logits
    assert logits.is_inference()
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)  # the fused GELU: the same formula
    torch.testing.assert_close(teacher(inputs).logits, expected, rtol=1e-5, atol=1e-5)
    assert not teacher(inputs).logits.is_inference()  # __call__'s outputs may be kept for backward
    # A student trained in half precision (trainer.precision: bf16-true) takes the teacher along.
    assert teacher.logits(inputs, torch.bfloat16).dtype == torch.bfloat16
