"""Token classification: a tag per word (named entities in BIO tags, part-of-speech tags).

The tagger is HF's ``AutoModelForTokenClassification`` head on the backbone
(Devlin et al. 2019, section 5.3). LabeledTextData gives a word's tag to its
first sub-token and -100 to the rest, so the loss (cross-entropy, with
optional class weights and label smoothing) and the metrics see one
prediction per word, as HF's ``run_ner.py`` does.

Metrics per validation epoch: ``accuracy`` over words and, when the tags are
BIO (``O``, ``B-X``, ``I-X``), ``entity_f1``: micro-averaged F1 over entity
spans, where a predicted span counts only if its type and both boundaries
match a true one (CoNLL-2000 ``conlleval``; seqeval's default mode). Spans
are read as conlleval reads them: ``B-X`` starts an entity, ``I-X``
continues an ``X`` entity and starts one after ``O`` or another type.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor

from lmforge.core.data.labeled import LabelInfo, class_weight_tensor, labels_of
from lmforge.core.plugins import Batch, Objective, ObjectiveOutput

IGNORE_INDEX = -100


def bio_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """The entities of a BIO tag sequence as ``(type, start, end)``, ``end`` exclusive."""
    spans: set[tuple[str, int, int]] = set()
    start, entity = 0, None
    for i, tag in enumerate([*tags, "O"]):  # the sentinel closes an entity that runs to the end
        prefix, _, kind = tag.partition("-")
        continues = prefix == "I" and kind == entity
        if continues:
            continue
        if entity is not None:
            spans.add((entity, start, i))
        start, entity = (i, kind) if prefix in ("B", "I") else (i, None)
    return spans


def entity_counts(true_tags: Sequence[str], pred_tags: Sequence[str]) -> tuple[int, int, int]:
    """(spans in both, predicted spans, true spans) of one sentence."""
    true, pred = bio_spans(true_tags), bio_spans(pred_tags)
    return len(true & pred), len(pred), len(true)


def is_bio(names: Sequence[str]) -> bool:
    return all(n == "O" or (len(n) > 2 and n[:2] in ("B-", "I-")) for n in names)


class EntityF1(torchmetrics.Metric):
    """Micro F1 over exactly matching entity spans; counts sum across batches and ranks.

    torchmetrics has no span-level metric (seqeval is not a torchmetrics
    Metric and would not sync across ranks), so the counting lives here.

    Args:
        names: Tag names by id.
    """

    full_state_update: ClassVar[bool] = False

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        self.names = list(names)
        for state in ("matched", "predicted", "true"):
            self.add_state(state, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Args: preds, target: (B, T) tag ids; positions where ``target`` is -100 are skipped."""
        for pred_row, true_row in zip(preds.tolist(), target.tolist()):
            kept = [(p, t) for p, t in zip(pred_row, true_row) if t != IGNORE_INDEX]
            matched, predicted, true = entity_counts([self.names[t] for _, t in kept],
                                                     [self.names[p] for p, _ in kept])
            self.matched += matched
            self.predicted += predicted
            self.true += true

    def compute(self) -> Tensor:
        denominator = self.predicted + self.true  # F1 = 2PR / (P + R) = 2 matched / (predicted + true)
        if denominator == 0:
            return torch.tensor(0.0, device=self.matched.device)
        return 2.0 * self.matched.float() / denominator.float()


class TokenClassification(Objective):
    """Tagging words (NER with BIO tags, part-of-speech) on LabeledTextData with word-list rows.

    Args:
        class_weights: Loss weight per tag: ``{tag: weight}`` (others weigh 1)
            or ``balanced`` (inverse training frequency of the words' tags).
        label_smoothing: Label smoothing of the cross-entropy; ``val/loss``
            stays the plain cross-entropy.
    """

    auto_model: ClassVar[str] = "AutoModelForTokenClassification"
    tokenizer_algorithm: ClassVar[str] = "wordpiece"
    layout: ClassVar[Literal["packed", "padded"]] = "padded"
    reports_perplexity: ClassVar[bool] = False

    def __init__(self, class_weights: dict[str, float] | Literal["balanced"] | None = None,
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"TokenClassification: label_smoothing must be in [0, 1), got {label_smoothing}.")
        self.class_weights = class_weights
        self.label_smoothing = label_smoothing
        #: The data's tags, from `bind_data`.
        self.labels: LabelInfo | None = None
        self.register_buffer("weight", torch.zeros(0), persistent=False)

    def bind_data(self, datamodule: Any | None) -> None:
        if datamodule is None and self.labels is not None:
            return
        labels = labels_of(datamodule, "TokenClassification")
        if labels.kind != "tags":
            raise ValueError(
                "TokenClassification: needs a list of words per example in data.text_column and a tag per word in "
                f"data.label_column, but the data has one {labels.kind} label per text; use SequenceClassification "
                "or point data.text_column / data.label_column at the word and tag lists."
            )
        self.labels = labels
        weight = class_weight_tensor(labels, self.class_weights, "TokenClassification")
        self.weight = weight if weight is not None else torch.zeros(0)

    def build_backbone_config(self, config: Any) -> None:
        config.id2label = dict(enumerate(self.labels.names))
        config.label2id = self.labels.label2id

    def compute(self, outputs: Any, batch: Batch) -> ObjectiveOutput:
        logits, labels = outputs.logits, batch["labels"]  # (B, T, C), (B, T)
        count = (labels != IGNORE_INDEX).sum()
        if count == 0:  # no tagged word in this batch: a zero loss that keeps the graph
            return ObjectiveOutput(loss=logits.sum() * 0.0, count=count)
        weight = self.weight if self.weight.numel() else None
        flat_logits, flat_labels = logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1)
        loss = F.cross_entropy(flat_logits, flat_labels, weight=weight, ignore_index=IGNORE_INDEX,
                               label_smoothing=self.label_smoothing)
        nll = None
        if weight is not None or self.label_smoothing > 0:
            nll = F.cross_entropy(flat_logits.detach(), flat_labels, ignore_index=IGNORE_INDEX)
        return ObjectiveOutput(loss=loss, count=count, nll=nll)

    def epoch_metrics(self) -> dict[str, torchmetrics.Metric]:
        names = self.labels.names
        metrics: dict[str, torchmetrics.Metric] = {
            "accuracy": torchmetrics.classification.MulticlassAccuracy(
                num_classes=len(names), average="micro", ignore_index=IGNORE_INDEX)}
        if is_bio(names):
            metrics["entity_f1"] = EntityF1(names)
        return metrics

    def update_epoch_metrics(self, metrics: dict[str, Any], outputs: Any, batch: Batch) -> None:
        preds = outputs.logits.argmax(-1)
        for metric in metrics.values():
            metric.update(preds, batch["labels"])
