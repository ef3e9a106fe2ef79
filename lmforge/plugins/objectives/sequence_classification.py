"""Sequence classification: a label (several labels, or a number) per text.

The classifier is HF's ``AutoModelForSequenceClassification`` head on the
backbone: BERT's pooled ``[CLS]`` vector (Devlin et al. 2019), GPT-2's last
non-padding token (Radford et al. 2018). Losses, as HF computes them for each
``problem_type``:

- ``single_label_classification``: cross-entropy over the classes, with
  optional class weights and label smoothing (``torch.nn.functional.cross_entropy``).
- ``multi_label_classification``: binary cross-entropy per label on multi-hot
  targets; a class weight scales that label's term, and label smoothing moves
  the targets to ``s/2`` and ``1 - s/2``.
- ``regression``: mean squared error of the single output.

Metrics per validation epoch (torchmetrics): ``accuracy`` and ``macro_f1``
(multi-label: per-label decisions at probability 0.5, plus ``exact_match``);
regression: ``mae`` and ``pearson``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor

from lmforge.core.data.labeled import LabelInfo, class_weight_tensor, labels_of
from lmforge.core.plugins import Batch, Objective, ObjectiveOutput

ProblemType = Literal["single_label_classification", "multi_label_classification", "regression"]
#: The label kind LabeledTextData must find for each problem type, and how to ask for it.
DATA_KIND = {"single_label_classification": "class", "multi_label_classification": "multi", "regression": "regression"}
KIND_TEXT = {"class": "one class name per example", "multi": "a list of class names per example",
             "regression": "a float per example", "tags": "a tag per word"}
KIND_PROBLEM = {v: k for k, v in DATA_KIND.items()}


def sequence_classification_loss(logits: Tensor, labels: Tensor, problem_type: ProblemType,
                                 weight: Tensor | None = None, label_smoothing: float = 0.0) -> Tensor:
    """The mean loss of a batch.

    Args:
        logits: (B, C) scores (C = 1 for regression).
        labels: (B,) class ids, (B, C) multi-hot targets, or (B,) float targets.
        weight: (C,) per-class weights, or None.
    """
    logits = logits.float()
    if problem_type == "single_label_classification":
        return F.cross_entropy(logits, labels, weight=weight, label_smoothing=label_smoothing)
    if problem_type == "multi_label_classification":
        targets = labels * (1.0 - label_smoothing) + label_smoothing / 2
        return F.binary_cross_entropy_with_logits(logits, targets, weight=weight)
    return F.mse_loss(logits.squeeze(-1), labels.float())


class SequenceClassification(Objective):
    """Text classification (sentiment, topic; single- or multi-label) or regression, on LabeledTextData.

    Args:
        problem_type: ``single_label_classification`` (one class per text),
            ``multi_label_classification`` (a list of classes per text) or
            ``regression`` (a float per text). Must fit the data's label column.
        class_weights: Loss weight per class: ``{label name: weight}`` (others
            weigh 1) or ``balanced`` (inverse training frequency). Not for
            regression.
        label_smoothing: Label smoothing of the cross-entropy; ``val/loss`` stays
            the plain cross-entropy. Not for regression.
    """

    auto_model: ClassVar[str] = "AutoModelForSequenceClassification"
    tokenizer_algorithm: ClassVar[str] = "wordpiece"
    layout: ClassVar[Literal["packed", "padded"]] = "padded"
    reports_perplexity: ClassVar[bool] = False

    def __init__(self, problem_type: ProblemType = "single_label_classification",
                 class_weights: dict[str, float] | Literal["balanced"] | None = None,
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        if problem_type not in DATA_KIND:
            raise ValueError(f"SequenceClassification: problem_type must be one of {sorted(DATA_KIND)}, "
                             f"got {problem_type!r}.")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"SequenceClassification: label_smoothing must be in [0, 1), got {label_smoothing}.")
        if problem_type == "regression" and (class_weights is not None or label_smoothing > 0):
            raise ValueError("SequenceClassification: class_weights and label_smoothing do not apply to "
                             "problem_type regression; remove them.")
        self.problem_type = problem_type
        self.class_weights = class_weights
        self.label_smoothing = label_smoothing
        #: The data's labels, from `bind_data`.
        self.labels: LabelInfo | None = None
        self.pad_token_id: int | None = None
        self.register_buffer("weight", torch.zeros(0), persistent=False)

    def bind_data(self, datamodule: Any | None) -> None:
        if datamodule is None and self.labels is not None:
            return
        labels = labels_of(datamodule, "SequenceClassification")
        expected = DATA_KIND[self.problem_type]
        if labels.kind != expected:
            hint = (f"set model.objective.init_args.problem_type: {KIND_PROBLEM[labels.kind]}"
                    if labels.kind in KIND_PROBLEM else "use the TokenClassification objective")
            raise ValueError(
                f"SequenceClassification: problem_type {self.problem_type} needs {KIND_TEXT[expected]} in "
                f"data.label_column, but the data has {KIND_TEXT[labels.kind]}; {hint}."
            )
        if labels.kind != "regression" and len(labels.names) < 2:
            raise ValueError(f"SequenceClassification: the training data has a single label {labels.names}; "
                             "a classifier needs at least two.")
        self.labels = labels
        self.pad_token_id = getattr(getattr(datamodule, "tokenizer", None), "pad_token_id", None)
        weight = class_weight_tensor(labels, self.class_weights, "SequenceClassification")
        self.weight = weight if weight is not None else torch.zeros(0)

    def build_backbone_config(self, config: Any) -> None:
        if self.labels.kind == "regression":
            config.num_labels = 1
        else:
            config.id2label = dict(enumerate(self.labels.names))
            config.label2id = self.labels.label2id
        config.problem_type = self.problem_type  # the HF pipeline picks softmax / sigmoid / identity from it
        if getattr(config, "pad_token_id", None) is None and self.pad_token_id is not None:
            config.pad_token_id = self.pad_token_id  # GPT-2 style heads find the last token through it

    def compute(self, outputs: Any, batch: Batch) -> ObjectiveOutput:
        weight = self.weight if self.weight.numel() else None
        labels = batch["labels"]
        loss = sequence_classification_loss(outputs.logits, labels, self.problem_type, weight, self.label_smoothing)
        nll = None
        if weight is not None or self.label_smoothing > 0:
            nll = sequence_classification_loss(outputs.logits.detach(), labels, self.problem_type)
        return ObjectiveOutput(loss=loss, count=torch.tensor(labels.shape[0], device=labels.device), nll=nll)

    def epoch_metrics(self) -> dict[str, torchmetrics.Metric]:
        if self.problem_type == "regression":
            return {"mae": torchmetrics.MeanAbsoluteError(), "pearson": torchmetrics.PearsonCorrCoef()}
        C = len(self.labels.names)
        if self.problem_type == "multi_label_classification":
            return {"accuracy": torchmetrics.classification.MultilabelAccuracy(num_labels=C, average="micro"),
                    "exact_match": torchmetrics.classification.MultilabelExactMatch(num_labels=C),
                    "macro_f1": torchmetrics.classification.MultilabelF1Score(num_labels=C, average="macro")}
        return {"accuracy": torchmetrics.classification.MulticlassAccuracy(num_classes=C, average="micro"),
                "macro_f1": torchmetrics.classification.MulticlassF1Score(num_classes=C, average="macro")}

    def update_epoch_metrics(self, metrics: dict[str, Any], outputs: Any, batch: Batch) -> None:
        logits, labels = outputs.logits.float(), batch["labels"]
        if self.problem_type == "regression":
            preds, target = logits.squeeze(-1), labels.float()
        elif self.problem_type == "multi_label_classification":
            # Probabilities, not logits: torchmetrics guesses logits only when values leave [0, 1].
            preds, target = torch.sigmoid(logits), labels.long()
        else:
            preds, target = logits.argmax(-1), labels
        for metric in metrics.values():
            metric.update(preds, target)
