"""TokenClassification: BIO spans and entity-level F1 against hand tables, the loss against plain
cross-entropy over tagged words, label checks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lmforge.core.data.labeled import LabelInfo
from lmforge.plugins.objectives.token_classification import (
    EntityF1,
    TokenClassification,
    bio_spans,
    entity_counts,
)

TAGS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


@pytest.mark.parametrize("tags, spans", [
    (["O", "O"], set()),
    (["B-PER", "I-PER", "O", "B-LOC"], {("PER", 0, 2), ("LOC", 3, 4)}),
    (["B-LOC", "B-LOC", "I-LOC"], {("LOC", 0, 1), ("LOC", 1, 3)}),  # B starts a new entity
    (["O", "I-PER", "I-PER"], {("PER", 1, 3)}),  # I after O starts one (conlleval)
    (["B-PER", "I-LOC", "I-LOC"], {("PER", 0, 1), ("LOC", 1, 3)}),  # I of another type starts one
    (["I-LOC"], {("LOC", 0, 1)}),
])
def test_bio_spans(tags: list[str], spans: set) -> None:
    assert bio_spans(tags) == spans


def test_entity_counts_need_matching_type_and_both_boundaries() -> None:
    # sentence               true spans                   predicted spans              match
    table = [
        (["B-PER", "I-PER", "O"], ["B-PER", "I-PER", "O"], 1, 1, 1),   # exact
        (["B-PER", "I-PER", "O"], ["B-PER", "O", "O"], 0, 1, 1),       # end too early
        (["O", "B-LOC", "I-LOC"], ["B-LOC", "I-LOC", "I-LOC"], 0, 1, 1),  # start too early
        (["B-LOC", "I-LOC", "O"], ["B-PER", "I-PER", "O"], 0, 1, 1),   # right boundaries, wrong type
        (["B-LOC", "O", "B-PER"], ["B-LOC", "O", "O"], 1, 1, 2),       # one missed
        (["O", "O", "O"], ["B-PER", "O", "B-LOC"], 0, 2, 0),           # two spurious
    ]
    for true, pred, matched, n_pred, n_true in table:
        assert entity_counts(true, pred) == (matched, n_pred, n_true), (true, pred)


def test_entity_f1_metric_sums_counts_and_skips_ignored_positions() -> None:
    names = TAGS
    O, BL, IL, BP, IP = range(5)
    X = -100
    # Sentence 1 (a sub-token ignored): true PER(0-2) LOC(2-3); pred PER(0-2) PER(2-3) -> 1 match, 2 pred, 2 true.
    # Sentence 2: true LOC(0-2); pred LOC(0-1) -> 0 match, 1 pred, 1 true.
    target = torch.tensor([[X, BP, X, IP, BL, X], [X, BL, IL, O, X, X]])
    preds = torch.tensor([[O, BP, BL, IP, BP, O], [O, BL, O, O, BP, BP]])
    metric = EntityF1(names)
    metric.update(preds[:1], target[:1])
    metric.update(preds[1:], target[1:])
    precision, recall = 1 / 3, 1 / 3
    assert float(metric.compute()) == pytest.approx(2 * precision * recall / (precision + recall))
    assert EntityF1(names).compute() == 0.0


def bound(names: list[str] = TAGS, **kwargs) -> TokenClassification:
    objective = TokenClassification(**kwargs)
    objective.bind_data(SimpleNamespace(labels=LabelInfo("tags", names, {"train": {n: 1 for n in names}})))
    return objective


def test_loss_is_cross_entropy_over_tagged_words_only() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, len(TAGS), generator=g)
    labels = torch.tensor([[-100, 1, 2, -100, 0], [-100, 3, -100, -100, -100]])
    kept = labels != -100
    log_p = torch.log_softmax(logits, -1)[kept]
    expected = -log_p[torch.arange(int(kept.sum())), labels[kept]].mean()
    out = bound().compute(SimpleNamespace(logits=logits), {"labels": labels})
    assert torch.allclose(out.loss, expected) and int(out.count) == 4 and out.nll is None
    nothing = bound().compute(SimpleNamespace(logits=logits), {"labels": torch.full_like(labels, -100)})
    assert float(nothing.loss) == 0.0 and int(nothing.count) == 0


def test_epoch_metrics_accuracy_over_words_and_entity_f1_only_for_bio_tags() -> None:
    objective = bound()
    metrics = objective.epoch_metrics()
    assert set(metrics) == {"accuracy", "entity_f1"}
    labels = torch.tensor([[-100, 3, 4, 0, -100]])
    logits = torch.nn.functional.one_hot(torch.tensor([[0, 3, 0, 0, 1]]), 5).float()
    objective.update_epoch_metrics(metrics, SimpleNamespace(logits=logits), {"labels": labels})
    assert float(metrics["accuracy"].compute()) == pytest.approx(2 / 3)
    assert float(metrics["entity_f1"].compute()) == 0.0  # PER(1-3) predicted as PER(1-2)
    assert set(bound(["NOUN", "VERB", "DET"]).epoch_metrics()) == {"accuracy"}  # part-of-speech tags


def test_sentence_labels_are_refused_and_config_gets_the_tags() -> None:
    with pytest.raises(ValueError, match="TokenClassification: needs a list of words"):
        TokenClassification().bind_data(SimpleNamespace(labels=LabelInfo("class", ["a", "b"])))
    config = SimpleNamespace()
    bound().build_backbone_config(config)
    assert config.id2label == dict(enumerate(TAGS)) and config.label2id["I-PER"] == 4
