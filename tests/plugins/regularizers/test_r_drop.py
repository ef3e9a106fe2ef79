"""RDrop against a hand-written symmetric KL, on the positions the objective scores."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from lmforge.core.plugins import StepContext
from lmforge.plugins.objectives.causal_lm import CausalLM
from lmforge.plugins.objectives.masked_lm import MaskedLM
from lmforge.plugins.regularizers.dropout import Dropout
from lmforge.plugins.regularizers.r_drop import RDrop, symmetric_kl


def hand_symmetric_kl(rows_a: list[list[float]], rows_b: list[list[float]]) -> float:
    """mean over rows of (KL(p||q) + KL(q||p)) / 2, p = softmax(a), q = softmax(b), in plain Python."""
    def softmax(row):
        exps = [math.exp(x) for x in row]
        return [e / sum(exps) for e in exps]

    total = 0.0
    for a, b in zip(rows_a, rows_b):
        p, q = softmax(a), softmax(b)
        kl_pq = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
        kl_qp = sum(qi * math.log(qi / pi) for pi, qi in zip(p, q))
        total += (kl_pq + kl_qp) / 2
    return total / len(rows_a)


A = [[1.0, 2.0, 0.5, -1.0], [0.0, 0.0, 0.0, 0.0], [3.0, -2.0, 1.0, 0.5]]
B = [[0.5, 2.5, 0.0, -0.5], [1.0, -1.0, 0.0, 2.0], [3.0, -2.0, 1.0, 0.5]]


def test_symmetric_kl_matches_the_hand_formula():
    value = symmetric_kl(torch.tensor(A), torch.tensor(B))
    assert float(value) == pytest.approx(hand_symmetric_kl(A, B), rel=1e-6)
    assert float(symmetric_kl(torch.tensor(B), torch.tensor(A))) == pytest.approx(float(value), rel=1e-6)
    assert float(symmetric_kl(torch.tensor(A), torch.tensor(A))) == pytest.approx(0.0, abs=1e-7)
    empty = torch.zeros(0, 4, requires_grad=True)
    assert float(symmetric_kl(empty, empty).detach()) == 0.0


def logits_for(rows: list[list[float]], positions: list[tuple[int, int]], shape: tuple[int, int, int]) -> torch.Tensor:
    """A (B, T, V) tensor with ``rows`` at ``positions`` and noise elsewhere (which must not count)."""
    logits = torch.randn(shape, generator=torch.Generator().manual_seed(1)) * 5
    for row, (b, t) in zip(rows, positions):
        logits[b, t] = torch.tensor(row)
    return logits


def run(objective, logits_a: torch.Tensor, logits_b: torch.Tensor, labels: torch.Tensor, alpha: float) -> torch.Tensor:
    batch = {"input_ids": labels.clamp(min=0), "labels": labels}
    ctx = StepContext(batch=batch, outputs=SimpleNamespace(logits=logits_a), objective_loss=torch.zeros(()),
                      objective=objective, forward=lambda b: SimpleNamespace(logits=logits_b))
    return RDrop(alpha=alpha).loss(ctx)


def test_causal_lm_pairs_logits_at_t_with_labels_at_t_plus_1():
    labels = torch.tensor([[5, 6, -100, 7], [8, -100, -100, 9]])  # scored targets: (0,1) (0,3) (1,3)
    positions = [(0, 0), (0, 2), (1, 2)]  # the logits that predict them
    shape = (2, 4, 4)
    term = run(CausalLM(), logits_for(A, positions, shape), logits_for(B, positions, shape), labels, alpha=0.7)
    assert float(term) == pytest.approx(0.7 * hand_symmetric_kl(A, B), rel=1e-6)


def test_masked_lm_pairs_logits_and_labels_at_the_same_position():
    labels = torch.tensor([[-100, 6, -100, 7], [-100, -100, 9, -100]])
    positions = [(0, 1), (0, 3), (1, 2)]
    shape = (2, 4, 4)
    term = run(MaskedLM(), logits_for(A, positions, shape), logits_for(B, positions, shape), labels, alpha=2.0)
    assert float(term) == pytest.approx(2.0 * hand_symmetric_kl(A, B), rel=1e-6)


def test_second_pass_draws_a_new_mask_and_gradients_reach_both_passes(make_model):
    rdrop = RDrop(alpha=1.0)
    model = make_model("gpt2", regularizers=[Dropout(hidden=0.1, attention=0.1, embedding=0.1), rdrop])
    model.train()
    ids = torch.randint(5, len(model.tokenizer), (2, 16), generator=torch.Generator().manual_seed(0))
    batch = model.objective.prepare({"input_ids": ids}, torch.Generator())
    outputs = model(batch)
    term = rdrop.loss(StepContext(batch=batch, outputs=outputs, objective_loss=torch.zeros(()),
                                  objective=model.objective, forward=model))
    assert float(term.detach()) > 0
    term.backward()
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad and p.ndim == 2)


def test_warns_when_there_is_no_dropout(make_model):
    rdrop = RDrop()
    model = make_model("llama", regularizers=[rdrop])  # llama's attention dropout defaults to 0
    model.train()
    batch = model.objective.prepare({"input_ids": torch.randint(5, 50, (2, 8))}, torch.Generator())
    with pytest.warns(UserWarning, match="R-Drop term is 0"):
        term = rdrop.loss(StepContext(batch=batch, outputs=model(batch), objective_loss=torch.zeros(()),
                                      objective=model.objective, forward=model))
    assert float(term.detach()) == 0.0


def test_alpha_must_be_positive():
    with pytest.raises(ValueError, match="alpha must be > 0"):
        RDrop(alpha=0.0)


def test_sequence_level_logits_are_scored_whole_unless_ignored():
    """The base Objective.scored_logits for (B, C) logits, as a classification objective gives."""
    logits = torch.arange(12.0).reshape(3, 4)
    objective = MaskedLM()  # inherits the base implementation
    assert torch.equal(objective.scored_logits(logits, {"labels": torch.tensor([1, -100, 2])}), logits[[0, 2]])
    assert torch.equal(objective.scored_logits(logits, {}), logits)
