"""LogitDistillation with ``teacher_top_k``: the sparse KL against the dense loss (k = V) and a float64
reference (k < V), and the cache of the teacher's top k: hits without a teacher pass, misses for changed rows
only, reuse by a second run, a damaged file computed again, and the conformance kit."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny import TINY_GPT2

from lmforge.core.backbone import Backbone
from lmforge.core.module import LanguageModel
from lmforge.core.plugins import LossOutput, StepContext
from lmforge.core.teacher import FrozenTeacher
from lmforge.plugins.distillation.logit_distillation import (
    LogitDistillation,
    distillation_positions,
    logit_distillation_loss,
    sparse_distillation_loss,
)
from lmforge.plugins.objectives.causal_lm import CausalLM

B, T, V = 3, 6, 13
STUDENT = Backbone("gpt2", {**TINY_GPT2.config, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0})


@pytest.fixture
def logits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(B, T, V, generator=g) * 2, torch.randn(B, T, V, generator=g) * 2, torch.rand(B, T, generator=g) > 0.3


def sparse_reference(student: torch.Tensor, teacher: torch.Tensor, k: int, temperature: float,
                     mask: torch.Tensor) -> torch.Tensor:
    """T^2 * masked mean of sum_k p_t,k (log p_t,k - log q_k), p_t = softmax over the teacher's top k, in float64."""
    values, ids = teacher.double().topk(k, dim=-1)
    log_p = F.log_softmax(values / temperature, dim=-1)
    log_q = F.log_softmax(student.double() / temperature, dim=-1).gather(-1, ids)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    return temperature**2 * (kl * mask.double()).sum() / mask.double().sum()


def rest_reference(student: torch.Tensor, teacher: torch.Tensor, k: int, temperature: float,
                   mask: torch.Tensor) -> torch.Tensor:
    """The same with the teacher's own probabilities at its top k and one more outcome, every other id, for the
    rest of both sides' mass, in float64."""
    p = F.softmax(teacher.double() / temperature, dim=-1)
    q = F.softmax(student.double() / temperature, dim=-1)
    ids = teacher.topk(k, dim=-1).indices
    p_k, q_k = p.gather(-1, ids), q.gather(-1, ids)
    p_rest, q_rest = 1 - p_k.sum(-1), 1 - q_k.sum(-1)
    kl = (p_k * (p_k.log() - q_k.log())).sum(-1) + torch.xlogy(p_rest, p_rest) - p_rest * q_rest.log()
    return temperature**2 * (kl * mask.double()).sum() / mask.double().sum()


def teacher_rest(teacher: torch.Tensor, ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """The teacher's softmax(t / T) off ``ids``, as the plugin stores it."""
    from lmforge.plugins.distillation.logit_distillation import probability_off_top_k

    return probability_off_top_k(teacher, ids, temperature)


@pytest.mark.parametrize("with_rest", [False, True])
@pytest.mark.parametrize("chunk", [1 << 18, 2 * V])  # every row at once; two rows at a time
@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
def test_top_k_of_the_whole_vocabulary_is_the_dense_loss_and_gradient(logits, temperature: float, chunk: int,
                                                                      with_rest: bool, monkeypatch) -> None:
    import lmforge.plugins.distillation.logit_distillation as module

    monkeypatch.setattr(module, "CHUNK_VALUES", chunk)
    student, teacher, mask = logits
    dense_student, sparse_student = student.clone().requires_grad_(True), student.clone().requires_grad_(True)
    dense = logit_distillation_loss(dense_student, teacher, temperature, mask)
    dense.backward()
    values, ids = teacher.topk(V, dim=-1, sorted=False)
    rest = teacher_rest(teacher, ids, temperature) if with_rest else None
    if with_rest:
        assert bool((rest == 0).all())  # no mass off every id
    sparse = sparse_distillation_loss(sparse_student, values, ids.short(), temperature, mask, rest)
    sparse.backward()
    assert sparse.item() == pytest.approx(dense.item(), rel=1e-6)
    torch.testing.assert_close(sparse_student.grad, dense_student.grad, rtol=1e-6, atol=1e-8)
    reference = student.double().requires_grad_(True)
    expected = sparse_reference(reference, teacher, V, temperature, mask)
    expected.backward()
    assert sparse.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(sparse_student.grad.double(), reference.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_sparse_loss_and_gradient_match_a_float64_reference_below_the_vocabulary(logits, k: int) -> None:
    student, teacher, mask = logits
    ours = student.clone().requires_grad_(True)
    values, ids = teacher.topk(k, dim=-1)
    loss = sparse_distillation_loss(ours, values, ids.int(), 2.0, mask)
    loss.backward()
    theirs = student.double().requires_grad_(True)
    expected = sparse_reference(theirs, teacher, k, 2.0, mask)
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(ours.grad.double(), theirs.grad, rtol=1e-4, atol=1e-7)
    assert bool((ours.grad[~mask] == 0).all())
    # The truncation is an approximation: below V it is not the dense loss.
    assert abs(loss.item() - logit_distillation_loss(student, teacher, 2.0, mask).item()) > 1e-3


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("k", [1, 3, 8])
def test_with_the_teachers_rest_the_loss_and_gradient_match_a_float64_reference(logits, k: int,
                                                                                temperature: float) -> None:
    student, teacher, mask = logits
    ours = student.clone().requires_grad_(True)
    values, ids = teacher.topk(k, dim=-1)
    rest = teacher_rest(teacher, ids, temperature)
    torch.testing.assert_close(rest.double(), 1 - F.softmax(teacher.double() / temperature, -1).gather(-1, ids).sum(-1),
                               rtol=1e-5, atol=1e-6)
    loss = sparse_distillation_loss(ours, values, ids.int(), temperature, mask, rest)
    loss.backward()
    theirs = student.double().requires_grad_(True)
    expected = rest_reference(theirs, teacher, k, temperature, mask)
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(ours.grad.double(), theirs.grad, rtol=1e-4, atol=1e-7)
    assert bool((ours.grad[~mask] == 0).all())
    # The rest makes a difference: without it the student is pulled toward 0 off the teacher's top k.
    renormalised = sparse_distillation_loss(student, values, ids, temperature, mask)
    assert abs(loss.item() - renormalised.item()) > 1e-3


def test_reverse_and_bad_k_are_refused_naming_the_key(make_teacher, tokenizer_dirs, build) -> None:
    with pytest.raises(ValueError, match=r"reverse must be false with teacher_top_k.*"
                                         r"model\.distiller\.init_args\.teacher_top_k: null"):
        LogitDistillation("teacher", teacher_top_k=4, reverse=True)
    with pytest.raises(ValueError, match="teacher_top_k must be at least 1"):
        LogitDistillation("teacher", teacher_top_k=0)
    model = LanguageModel(STUDENT, CausalLM(), distiller=LogitDistillation(str(make_teacher()), teacher_top_k=401))
    with pytest.raises(ValueError, match=r"teacher_top_k must be at most the vocabulary size 400, got 401"):
        build(model, tokenizer_dirs["bpe"])


class Counting:
    """Counts the teacher's passes and the rows they score."""

    def __init__(self, teacher: FrozenTeacher) -> None:
        self.calls, self.rows = 0, 0
        original = teacher.logits

        def logits(inputs, dtype=None):
            self.calls += 1
            self.rows += inputs["input_ids"].shape[0]
            return original(inputs, dtype)

        teacher.logits = logits


def distiller_model(teacher: Path, tokenizer_dir: Path, build, **kwargs) -> LanguageModel:
    torch.manual_seed(0)  # the same student each time
    return build(LanguageModel(STUDENT, CausalLM(), distiller=LogitDistillation(str(teacher), temperature=2.0,
                                                                                **kwargs)), tokenizer_dir)


def batch_of(seed: int, rows: int = 4, length: int = 16, vocab: int = 400) -> dict[str, torch.Tensor]:
    ids = torch.randint(0, vocab, (rows, length), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def step_loss(model: LanguageModel, batch: dict[str, torch.Tensor]) -> LossOutput:
    outputs = model(batch)
    ctx = StepContext(batch, outputs, torch.zeros(()), objective=model.objective, backbone=model.backbone)
    return model.distiller.loss(ctx)


def test_rows_seen_before_need_no_teacher_pass_and_give_the_same_loss(make_teacher, tokenizer_dirs, build,
                                                                      tmp_path) -> None:
    teacher = make_teacher("gpt2", layers=2)
    model = distiller_model(teacher, tokenizer_dirs["bpe"], build, teacher_top_k=10, teacher_cache=str(tmp_path))
    counting = Counting(model.distiller._teacher)
    batches = [batch_of(0), batch_of(1)]
    first = [step_loss(model, b) for b in batches]  # the first epoch: every row misses
    assert counting.calls == 2 and counting.rows == 8
    assert [(o.metrics["teacher_cache_hits"].item(), o.metrics["teacher_cache_misses"].item()) for o in first] == \
        [(0.0, 4.0), (0.0, 4.0)]
    second = [step_loss(model, b) for b in batches]  # the second: every row hits
    assert counting.calls == 2
    assert [o.metrics["teacher_cache_hits"].item() for o in second] == [4.0, 4.0]
    for a, b in zip(first, second):
        assert b.terms.item() == pytest.approx(a.terms.item(), rel=1e-6)
    # The loss is the KL from the teacher's top 10 and the rest of its mass, over the distilled positions.
    batch = batches[0]
    with torch.no_grad():
        student = model(batch).logits
        teacher_logits = model.distiller._teacher.model(input_ids=batch["input_ids"]).logits
    expected = rest_reference(student, teacher_logits, 10, 2.0, distillation_positions(batch, causal=True))
    assert second[0].terms.item() == pytest.approx(expected.item(), rel=1e-4)
    # A row an augmenter changed misses alone: the teacher scores that row only.
    changed = {k: v.clone() for k, v in batch.items()}
    changed["input_ids"][2, 5] = (changed["input_ids"][2, 5] + 1) % 400
    out = step_loss(model, changed)
    assert (counting.calls, counting.rows) == (3, 9)
    assert (out.metrics["teacher_cache_hits"].item(), out.metrics["teacher_cache_misses"].item()) == (3.0, 1.0)


def test_training_from_the_cached_whole_vocabulary_follows_the_dense_run(make_teacher, tokenizer_dirs, build,
                                                                           tmp_path) -> None:
    teacher = make_teacher("gpt2", layers=2)
    runs = {}
    for top_k in (None, 400):  # 400: the whole vocabulary
        model = distiller_model(teacher, tokenizer_dirs["bpe"], build, teacher_top_k=top_k,
                                teacher_cache=str(tmp_path))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        losses = []
        for step in range(4):  # the same two batches twice: from the third step on, the cache answers
            out = step_loss(model, batch_of(step % 2))
            term = out.terms if isinstance(out, LossOutput) else out
            term.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(term.item())
        runs[top_k] = (losses, model.backbone.state_dict())
    # Float32 rounding of two ways to write the same KL (about 1e-6 of terms near log V), on losses near 0.01.
    assert runs[400][0] == pytest.approx(runs[None][0], rel=1e-5, abs=5e-6)
    for name, value in runs[None][1].items():
        torch.testing.assert_close(runs[400][1][name], value, rtol=1e-5, atol=1e-6)


def test_a_second_run_reuses_the_stored_rows_and_another_k_does_not(make_teacher, tokenizer_dirs, build,
                                                                    tmp_path) -> None:
    teacher = make_teacher("gpt2", layers=2)
    first = distiller_model(teacher, tokenizer_dirs["bpe"], build, teacher_top_k=10, teacher_cache=str(tmp_path))
    expected = step_loss(first, batch_of(0)).terms.item()
    assert len(list(tmp_path.glob("*/shard-*.pt"))) == 1  # stored once, under the teacher's fingerprint

    second = distiller_model(teacher, tokenizer_dirs["bpe"], build, teacher_top_k=10, teacher_cache=str(tmp_path))
    counting = Counting(second.distiller._teacher)
    out = step_loss(second, batch_of(0))
    assert counting.calls == 0 and out.metrics["teacher_cache_hits"].item() == 4.0
    assert out.terms.item() == pytest.approx(expected, rel=1e-6)
    assert not list(tmp_path.glob("*/.*.tmp"))  # written under a temporary name, then renamed

    other_k = distiller_model(teacher, tokenizer_dirs["bpe"], build, teacher_top_k=5, teacher_cache=str(tmp_path))
    counting = Counting(other_k.distiller._teacher)
    step_loss(other_k, batch_of(0))
    assert counting.calls == 1
    other_teacher = distiller_model(make_teacher("gpt2", layers=3), tokenizer_dirs["bpe"], build, teacher_top_k=10,
                                    teacher_cache=str(tmp_path))
    counting = Counting(other_teacher.distiller._teacher)
    step_loss(other_teacher, batch_of(0))
    assert counting.calls == 1
    assert len(list(tmp_path.iterdir())) == 3  # one directory per teacher and k


def test_a_damaged_cache_file_is_removed_with_a_warning_and_computed_again(make_teacher, tokenizer_dirs, build,
                                                                          tmp_path, caplog) -> None:
    teacher = make_teacher("gpt2", layers=2)
    first = distiller_model(teacher, tokenizer_dirs["bpe"], build, teacher_top_k=10, teacher_cache=str(tmp_path))
    expected = step_loss(first, batch_of(0)).terms.item()
    (shard,) = tmp_path.glob("*/shard-*.pt")
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # a killed copy, say

    second = distiller_model(teacher, tokenizer_dirs["bpe"], build, teacher_top_k=10, teacher_cache=str(tmp_path))
    counting = Counting(second.distiller._teacher)
    with caplog.at_level(logging.WARNING, logger="lmforge.core.teacher_cache"):
        out = step_loss(second, batch_of(0))
    assert f"{shard} is damaged" in caplog.text and "computed again" in caplog.text
    assert counting.calls == 1 and out.metrics["teacher_cache_misses"].item() == 4.0
    assert out.terms.item() == pytest.approx(expected, rel=1e-6)
    third = distiller_model(teacher, tokenizer_dirs["bpe"], build, teacher_top_k=10, teacher_cache=str(tmp_path))
    counting = Counting(third.distiller._teacher)
    assert step_loss(third, batch_of(0)).metrics["teacher_cache_hits"].item() == 4.0  # rebuilt, and whole
    assert counting.calls == 0


def test_a_run_logs_hits_and_misses_and_the_terms_add_up(make_teacher, tokenizer_dirs, fit, read_logged,
                                                         tmp_path) -> None:
    distiller = LogitDistillation(str(make_teacher("gpt2", layers=2)), teacher_top_k=8,
                                  teacher_cache=str(tmp_path / "kd"))
    rows = [r for r in read_logged(fit(LanguageModel(STUDENT, CausalLM(), distiller=distiller),
                                       tokenizer_dirs["bpe"], steps=3)) if "loss/total" in r]
    assert len(rows) == 3
    for row in rows:
        assert row["loss/total"] == pytest.approx(row["loss/causal_lm"] + row["loss/logit_distillation"], rel=1e-5)
        assert row["metric/logit_distillation/teacher_cache_hits"] + \
            row["metric/logit_distillation/teacher_cache_misses"] == 4.0  # the batch's rows
    assert rows[0]["metric/logit_distillation/teacher_cache_misses"] == 4.0


def test_the_conformance_kit_passes_with_top_k(tmp_path) -> None:
    from lmforge.testing import check_plugin

    report = check_plugin(LogitDistillation, {"teacher_top_k": 8, "teacher_cache": str(tmp_path)}, tasks=["causal_lm"])
    assert "causal_lm: training step" in report.passed
