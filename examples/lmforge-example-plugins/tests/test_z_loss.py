"""ZLoss: lmforge's plugin contract, and the term against a plain log-sum-exp computation."""

import math
from typing import ClassVar

import pytest
import torch

from lmforge.core.backbone import Backbone
from lmforge.core.module import LanguageModel
from lmforge.core.plugin_checks import PluginCompatibilityError
from lmforge.core.plugins import Objective
from lmforge.testing import check_plugin, step_context
from lmforge_example_plugins import ZLoss
from lmforge_example_plugins.z_loss import z_loss


def reference_z_loss(rows: list[list[float]]) -> float:
    """Mean of log(sum(exp(row)))^2, in plain Python (shifted by the row max for stability)."""
    values = []
    for row in rows:
        top = max(row)
        log_z = top + math.log(sum(math.exp(x - top) for x in row))
        values.append(log_z**2)
    return sum(values) / len(values)


def test_keeps_the_plugin_contract():
    report = check_plugin(ZLoss)
    assert report.tasks == ["causal_lm", "masked_lm"]
    assert "causal_lm: gradient flow" in report.passed and "masked_lm: loss" in report.passed


def test_z_loss_matches_a_plain_reference():
    logits = torch.randn(6, 11, generator=torch.Generator().manual_seed(0)) * 5
    assert float(z_loss(logits)) == pytest.approx(reference_z_loss(logits.tolist()), rel=1e-5)


def test_z_loss_of_no_rows_is_zero_and_differentiable():
    logits = torch.zeros(0, 5, requires_grad=True)
    value = z_loss(logits)
    value.backward()
    assert float(value.detach()) == 0.0 and logits.grad is not None


@pytest.mark.parametrize("task", ["causal_lm", "masked_lm"])
def test_loss_is_weight_times_z_loss_of_the_scored_positions(task):
    plugin = ZLoss(weight=0.5)
    ctx = step_context(plugin, task=task)
    labels = ctx.batch["labels"]
    logits = ctx.outputs.logits.detach()
    if task == "causal_lm":  # position t predicts token t + 1
        rows = [logits[b, t].tolist() for b in range(labels.shape[0]) for t in range(labels.shape[1] - 1)
                if labels[b, t + 1] != -100]
    else:  # the masked positions
        rows = [logits[b, t].tolist() for b in range(labels.shape[0]) for t in range(labels.shape[1])
                if labels[b, t] != -100]
    assert float(plugin.loss(ctx).detach()) == pytest.approx(0.5 * reference_z_loss(rows), rel=1e-4)


def test_refuses_a_weight_that_is_not_positive():
    with pytest.raises(ValueError, match="ZLoss: weight must be > 0, got 0"):
        ZLoss(weight=0.0)


class SentimentClassifier(Objective):
    """A stand-in sequence-classification objective (its task derives from the Auto class)."""

    auto_model: ClassVar[str] = "AutoModelForSequenceClassification"
    layout = "padded"


def test_the_host_refuses_zloss_with_a_classification_objective():
    with pytest.raises(PluginCompatibilityError, match=r"ZLoss \(model.regularizers\[0\]; .*\) supports the "
                                                       r"objectives causal_lm, masked_lm, not SentimentClassifier "
                                                       r"\(task sequence_classification\)"):
        LanguageModel(Backbone("bert"), SentimentClassifier(), regularizers=[ZLoss()])
