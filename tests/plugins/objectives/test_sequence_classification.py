"""SequenceClassification: losses against plain references, metrics against hand computation,
label checks, and a tiny classifier's logged validation metrics."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Trainer
from tiny import TINY_BERT, TINY_GPT2
from transformers import AutoConfig

from lmforge.core.backbone import Backbone
from lmforge.core.data.labeled import LabeledTextData, LabelInfo, class_weight_tensor
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining
from lmforge.core.module import LanguageModel
from lmforge.plugins.objectives.sequence_classification import (
    SequenceClassification,
    sequence_classification_loss,
)

NAMES = ["negative", "neutral", "positive"]


def bound(objective: SequenceClassification, kind: str = "class", names: list[str] = NAMES,
          counts: dict | None = None) -> SequenceClassification:
    objective.bind_data(SimpleNamespace(labels=LabelInfo(kind, names, {"train": counts or {}}),
                                        tokenizer=SimpleNamespace(pad_token_id=0)))
    return objective


# -- losses --------------------------------------------------------------------------------------


def test_single_label_loss_is_plain_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(6, 3, generator=g), torch.tensor([0, 2, 1, 1, 0, 2])
    log_p = logits - logits.exp().sum(-1, keepdim=True).log()
    nll = -log_p[torch.arange(6), labels]
    expected = nll.mean()
    assert torch.allclose(sequence_classification_loss(logits, labels, "single_label_classification"), expected)
    w = torch.tensor([1.0, 2.0, 0.5])
    weighted = (w[labels] * nll).sum() / w[labels].sum()
    assert torch.allclose(sequence_classification_loss(logits, labels, "single_label_classification", w), weighted)
    eps = 0.1  # smoothing: (1 - eps) * nll + eps * mean over classes of -log p
    smoothed = ((1 - eps) * nll + eps * (-log_p).mean(-1)).mean()
    assert torch.allclose(sequence_classification_loss(logits, labels, "single_label_classification",
                                                       label_smoothing=eps), smoothed)


def test_multi_label_loss_is_binary_cross_entropy_and_regression_is_mse() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 3, generator=g)
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    p = torch.sigmoid(logits)
    bce = -(targets * p.log() + (1 - targets) * (1 - p).log())
    assert torch.allclose(sequence_classification_loss(logits, targets, "multi_label_classification"), bce.mean(),
                          atol=1e-6)
    w = torch.tensor([2.0, 1.0, 0.0])
    assert torch.allclose(sequence_classification_loss(logits, targets, "multi_label_classification", w),
                          (bce * w).mean(), atol=1e-6)
    smooth = targets * 0.8 + 0.1
    smoothed = -(smooth * p.log() + (1 - smooth) * (1 - p).log())
    assert torch.allclose(sequence_classification_loss(logits, targets, "multi_label_classification",
                                                       label_smoothing=0.2), smoothed.mean(), atol=1e-6)
    values, scores = torch.randn(5, 1, generator=g), torch.tensor([0.5, 1.0, -2.0, 0.0, 3.0])
    assert torch.allclose(sequence_classification_loss(values, scores, "regression"),
                          ((values[:, 0] - scores) ** 2).mean())


def test_compute_reports_the_plain_loss_as_nll_when_weighted() -> None:
    objective = bound(SequenceClassification(class_weights={"positive": 3.0}, label_smoothing=0.1),
                      counts={"negative": 1, "neutral": 1, "positive": 1})
    assert objective.weight.tolist() == [1.0, 1.0, 3.0]
    logits, labels = torch.randn(5, 3), torch.tensor([0, 1, 2, 2, 1])
    out = objective.compute(SimpleNamespace(logits=logits), {"labels": labels, "input_ids": torch.zeros(5, 4)})
    assert int(out.count) == 5
    assert torch.allclose(out.nll, torch.nn.functional.cross_entropy(logits, labels))
    assert not torch.allclose(out.loss, out.nll)


def test_balanced_class_weights_are_inverse_frequencies() -> None:
    info = LabelInfo("class", ["a", "b", "c"], {"train": {"a": 60, "b": 30, "c": 10}})
    # n / (k * n_c) = 100 / (3 * n_c)
    assert class_weight_tensor(info, "balanced", "X").tolist() == pytest.approx([100 / 180, 100 / 90, 100 / 30])
    with pytest.raises(ValueError, match=r"\['d'\] are not label names"):
        class_weight_tensor(info, {"d": 2.0}, "X")
    empty = LabelInfo("class", ["a", "b"], {"train": {"a": 5}})
    with pytest.raises(ValueError, match=r"cannot weight \['b'\]"):
        class_weight_tensor(empty, "balanced", "X")


# -- metrics -------------------------------------------------------------------------------------


def one_hot_logits(preds: list[int], classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(preds), classes).float() * 5.0


def run_metrics(objective: SequenceClassification, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> dict:
    metrics = objective.epoch_metrics()
    for logits, labels in batches:
        objective.update_epoch_metrics(metrics, SimpleNamespace(logits=logits), {"labels": labels})
    return {name: float(m.compute()) for name, m in metrics.items()}


def test_accuracy_and_macro_f1_match_a_hand_table() -> None:
    # true: 0 0 1 1 2 2 2 | pred: 0 1 1 1 2 0 2
    # class 0: tp 1, fp 1, fn 1 -> F1 1/2; class 1: tp 2, fp 1, fn 0 -> F1 4/5; class 2: tp 2, fp 0, fn 1 -> F1 4/5
    true, pred = [0, 0, 1, 1, 2, 2, 2], [0, 1, 1, 1, 2, 0, 2]
    objective = bound(SequenceClassification())
    # Two uneven batches: a mean of per-batch F1 values would differ from the epoch's F1.
    batches = [(one_hot_logits(pred[:2], 3), torch.tensor(true[:2])),
               (one_hot_logits(pred[2:], 3), torch.tensor(true[2:]))]
    result = run_metrics(objective, batches)
    assert result["accuracy"] == pytest.approx(5 / 7)
    assert result["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 4 / 5) / 3)


def test_multi_label_metrics_match_a_hand_table() -> None:
    true = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    pred = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 1, 1], [0, 0, 1]])
    # label 0: tp 2 fp 0 fn 0 -> 1; label 1: tp 2 fp 0 fn 0 -> 1; label 2: tp 1 fp 1 fn 1 -> 1/2
    objective = bound(SequenceClassification("multi_label_classification"), kind="multi")
    logits = (pred.float() * 2 - 1) * 3.0  # probabilities 0.95 / 0.05
    result = run_metrics(objective, [(logits, true.float())])
    assert result["accuracy"] == pytest.approx(10 / 12)  # per-label decisions
    assert result["exact_match"] == pytest.approx(2 / 4)
    assert result["macro_f1"] == pytest.approx((1 + 1 + 0.5) / 3)


def test_regression_metrics() -> None:
    objective = bound(SequenceClassification("regression"), kind="regression", names=[])
    preds, targets = torch.tensor([[1.0], [2.0], [4.0]]), torch.tensor([1.5, 2.0, 3.0])
    result = run_metrics(objective, [(preds, targets)])
    assert result["mae"] == pytest.approx((0.5 + 0 + 1) / 3)
    assert result["pearson"] == pytest.approx(float(torch.corrcoef(torch.stack([preds[:, 0], targets]))[0, 1]),
                                              rel=1e-5)


# -- labels and config -----------------------------------------------------------------------------


@pytest.mark.parametrize("problem_type, kind, hint", [
    ("single_label_classification", "regression", "problem_type: regression"),
    ("single_label_classification", "multi", "problem_type: multi_label_classification"),
    ("regression", "class", "problem_type: single_label_classification"),
    ("single_label_classification", "tags", "TokenClassification"),
])
def test_labels_of_the_wrong_type_for_the_head_are_refused(problem_type: str, kind: str, hint: str) -> None:
    with pytest.raises(ValueError, match=f"SequenceClassification: problem_type {problem_type} needs .*{hint}"):
        bound(SequenceClassification(problem_type), kind=kind)


def test_data_without_labels_and_a_single_class_are_refused() -> None:
    with pytest.raises(ValueError, match="LabeledTextData"):
        SequenceClassification().bind_data(SimpleNamespace(tokenizer=None))
    with pytest.raises(ValueError, match="at least two"):
        bound(SequenceClassification(), names=["only"])
    with pytest.raises(ValueError, match="do not apply to problem_type regression"):
        SequenceClassification("regression", label_smoothing=0.1)


def test_backbone_config_carries_labels_problem_type_and_pad_token() -> None:
    config = AutoConfig.for_model("gpt2", n_layer=1, n_embd=32, n_head=2, vocab_size=50)
    assert config.pad_token_id is None
    bound(SequenceClassification()).build_backbone_config(config)
    assert config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    assert config.label2id == {"negative": 0, "neutral": 1, "positive": 2}
    assert config.num_labels == 3 and config.problem_type == "single_label_classification"
    assert config.pad_token_id == 0
    regression = AutoConfig.for_model("bert")
    bound(SequenceClassification("regression"), kind="regression", names=[]).build_backbone_config(regression)
    assert regression.num_labels == 1 and regression.problem_type == "regression"


# -- end to end ------------------------------------------------------------------------------------


def reviews(path: Path, n: int, seed: int) -> Path:
    rng = __import__("random").Random(seed)
    words = {"positive": ["great", "lovely", "superb"], "negative": ["awful", "broken", "dull"],
             "neutral": ["okay", "average", "fine"]}
    rows = []
    for i in range(n):
        label = NAMES[i % 3]
        text = f"the {rng.choice(['soup', 'film', 'phone'])} was {rng.choice(words[label])}" + " really" * rng.randint(0, 6)
        rows.append({"text": text, "label": label})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("backbone, algorithm", [(TINY_BERT, "wordpiece"), (TINY_GPT2, "bpe")])
def test_logged_validation_metrics_equal_a_hand_computation(tmp_path: Path, backbone: Backbone,
                                                            algorithm: str) -> None:
    data = LabeledTextData(train=str(reviews(tmp_path / "train.jsonl", 48, 0)),
                           val=str(reviews(tmp_path / "val.jsonl", 21, 1)), batch_size=8, max_length=32,
                           tokenizer=TokenizerSpec(train=TokenizerTraining(algorithm=algorithm, vocab_size=300)),
                           cache_dir=str(tmp_path / "cache"), seed=0)
    model = LanguageModel(backbone, SequenceClassification(),
                          optimizer={"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-2}})
    trainer = Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    validator = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (result,) = validator.validate(model, datamodule=data, verbose=False)
    assert model.backbone.config.pad_token_id == data.tokenizer.pad_token_id
    model.eval()
    preds, true, losses = [], [], []
    with torch.no_grad():
        for batch in data.val_dataloader():
            logits = model.backbone(**{k: v for k, v in batch.items() if k != "labels"}).logits
            losses.append(torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="sum"))
            preds += logits.argmax(-1).tolist()
            true += batch["labels"].tolist()
            # Padding does not change an example's prediction: each one alone gives the same logits.
            for i in range(len(batch["labels"])):
                n = int(batch["attention_mask"][i].sum())
                alone = {k: v[i:i + 1, :n] for k, v in batch.items() if k != "labels"}
                torch.testing.assert_close(model.backbone(**alone).logits[0], logits[i], atol=1e-5, rtol=1e-4)
    f1s = []
    for c in range(3):
        tp = sum(p == c and t == c for p, t in zip(preds, true))
        fp = sum(p == c and t != c for p, t in zip(preds, true))
        fn = sum(p != c and t == c for p, t in zip(preds, true))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    assert result["val/accuracy"] == pytest.approx(sum(p == t for p, t in zip(preds, true)) / len(true))
    assert result["val/macro_f1"] == pytest.approx(sum(f1s) / 3, abs=1e-6)
    assert result["val/loss"] == pytest.approx(float(sum(losses)) / len(true), rel=1e-5)
    assert "val/perplexity" not in result
