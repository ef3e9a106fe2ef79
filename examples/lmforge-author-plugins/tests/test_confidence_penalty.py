"""ConfidencePenalty: the plugin contract (lmforge's conformance kit), and the term against a plain entropy
computed at the positions the objective scores."""

import math

import pytest
import torch

from lmforge.core.plugins import LossOutput
from lmforge.testing import step_context
from lmforge_author_plugins.confidence_penalty import ConfidencePenalty, mean_entropy


def entropy(row: list[float]) -> float:
    top = max(row)
    exps = [math.exp(x - top) for x in row]
    total = sum(exps)
    return -sum(e / total * math.log(e / total) for e in exps)


def scored_rows(logits: torch.Tensor, labels: torch.Tensor, causal: bool) -> list[list[float]]:
    """The logit rows the objective scores, found by hand: a causal LM predicts labels[t + 1] at t."""
    rows = []
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1] - (1 if causal else 0)):
            if labels[b, t + 1 if causal else t] != -100:
                rows.append(logits[b, t].tolist())
    return rows


def test_keeps_the_plugin_contract(lmforge_kit):
    report = lmforge_kit.check(ConfidencePenalty)
    assert report.tasks == ["causal_lm", "masked_lm"]
    lmforge_kit.check(ConfidencePenalty, init_args={"beta": 2.0},
                      tasks=["sequence_classification", "token_classification"])


def test_mean_entropy_matches_a_plain_reference():
    logits = torch.randn(5, 9, generator=torch.Generator().manual_seed(0)) * 3
    assert float(mean_entropy(logits)) == pytest.approx(sum(entropy(r) for r in logits.tolist()) / 5, rel=1e-5)
    assert float(mean_entropy(torch.zeros(1, 4))) == pytest.approx(math.log(4))
    assert float(mean_entropy(torch.zeros(0, 4))) == 0.0


def spike_unscored(ctx, causal: bool) -> None:
    """Make the logits at the positions the objective does not score near one-hot (entropy ~0), so that a
    term that counted them would differ a lot from one that does not."""
    labels = ctx.batch["labels"]
    scored = torch.zeros_like(labels, dtype=torch.bool)
    if causal:
        scored[:, :-1] = labels[:, 1:] != -100
    else:
        scored = labels != -100
    logits = ctx.outputs.logits.clone()
    logits[~scored] = 0.0
    logits[..., 0][~scored] = 100.0
    ctx.outputs.logits = logits


@pytest.mark.parametrize("task", ["causal_lm", "masked_lm"])
def test_the_term_is_minus_beta_times_the_entropy_at_the_scored_positions(task, lmforge_kit):
    plugin = ConfidencePenalty(beta=0.5)
    ctx = step_context(plugin, task=task, kit=lmforge_kit)
    spike_unscored(ctx, causal=task == "causal_lm")
    rows = scored_rows(ctx.outputs.logits.detach().float(), ctx.batch["labels"], causal=task == "causal_lm")
    assert 0 < len(rows) < ctx.batch["labels"].numel()  # some positions are not scored, and they must not count
    expected = sum(entropy(r) for r in rows) / len(rows)
    out = plugin.loss(ctx)
    assert isinstance(out, LossOutput)
    assert float(out.terms.detach()) == pytest.approx(-0.5 * expected, rel=1e-4)
    assert float(out.metrics["entropy"]) == pytest.approx(expected, rel=1e-4)
    assert out.terms.requires_grad and not out.metrics["entropy"].requires_grad


def test_one_row_per_example_for_sequence_classification(lmforge_kit):
    ctx = step_context(ConfidencePenalty(), task="sequence_classification", kit=lmforge_kit)
    logits = ctx.outputs.logits.detach().float()  # (B, C)
    expected = sum(entropy(r) for r in logits.tolist()) / logits.shape[0]
    assert float(ConfidencePenalty(beta=1.0).loss(ctx).terms.detach()) == pytest.approx(-expected, rel=1e-4)


def test_refuses_a_negative_beta():
    with pytest.raises(ValueError, match="beta must be >= 0, got -1.0"):
        ConfidencePenalty(beta=-1.0)
