"""What a user does with a trained masked LM, classifier and tagger: validate, export, use in a pipeline, predict.

    lmforge validate --config mlm-pretrain ... --ckpt_path runs/mlm-pretrain/version_0/checkpoints/best-step=N.ckpt
    lmforge export runs/RECIPE/version_0/checkpoints/last.ckpt exported/
    transformers.pipeline("fill-mask" | "text-classification" | "token-classification", model="exported")
    lmforge predict exported --input reviews.jsonl --output predictions.jsonl
    lmforge predict exported --input sentences.jsonl --text-column tokens --output tags.jsonl

The runs are the session's single-process recipe runs (test_every_recipe.py); the causal LM's export is in
test_run_lifecycle.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from journey_kit import (QUICK_LIMIT, Journeys, bundled_jsonl, console_metric, load_checkpoint, metric_values,
                         read_metrics, short_args)

SENTIMENT_LABELS = {row["label"] for row in bundled_jsonl("sentiment/train.jsonl")}
NER_TAGS = {tag for row in bundled_jsonl("ner/train.jsonl") for tag in row["tags"]}


@pytest.fixture(scope="module")
def export(fit_recipe, journeys: Journeys, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``export(recipe)``: the session run's last.ckpt exported with ``lmforge export``, once."""
    done: dict[str, Path] = {}

    def run(recipe: str) -> Path:
        if recipe not in done:
            fitted = fit_recipe(recipe)
            fitted.result.expect_ok()
            workdir = tmp_path_factory.mktemp(f"export-{recipe}")
            journeys.lmforge(["export", str(fitted.last_ckpt), "exported"], workdir, limit=QUICK_LIMIT).expect_ok()
            done[recipe] = workdir / "exported"
        return done[recipe]

    return run


@pytest.mark.slow
def test_masked_lm_validate_reproduces_the_val_loss_logged_during_fit(fit_recipe, journeys: Journeys) -> None:
    run = fit_recipe("mlm-pretrain")
    run.result.expect_ok()
    best = run.best_ckpt()
    step = int(load_checkpoint(best)["global_step"])
    logged = [v for s, v in metric_values(read_metrics(run.run_dir), "val/loss") if s in (step - 1, step)]
    assert logged, f"{run.run_dir}/metrics.csv has no val/loss at step {step}"
    result = journeys.lmforge(["validate", "--config", "mlm-pretrain", *short_args("mlm-pretrain"),
                               "--ckpt_path", str(best)], run.workdir).expect_ok()
    assert console_metric(result.output, "val/loss") == pytest.approx(logged[-1], rel=1e-5)


@pytest.mark.slow
def test_exported_masked_lm_fills_a_mask(export) -> None:
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

    exported = export("mlm-pretrain")
    tokenizer = AutoTokenizer.from_pretrained(exported, local_files_only=True)
    text = f"the cat sat on the {tokenizer.mask_token} ."
    filled = pipeline("fill-mask", model=str(exported), device="cpu")(text, top_k=3)
    assert len(filled) == 3 and all(tokenizer.mask_token not in f["sequence"] for f in filled)
    # Reference: the most likely token at the mask, from the model's logits.
    model = AutoModelForMaskedLM.from_pretrained(exported, local_files_only=True).eval()
    encoded = tokenizer(text, return_tensors="pt")
    at = int((encoded["input_ids"][0] == tokenizer.mask_token_id).nonzero()[0, 0])
    with torch.no_grad():
        best = int(model(**encoded).logits[0, at].argmax())
    assert filled[0]["token"] == best


REVIEWS = [row["text"] for row in bundled_jsonl("sentiment/val.jsonl")[:4]]
SENTENCES = [row["tokens"] for row in bundled_jsonl("ner/val.jsonl")[:4]]


@pytest.mark.slow
def test_exported_classifier_names_the_labels_in_a_text_classification_pipeline(export) -> None:
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(export("finetune-sentiment")), device="cpu")
    labels = {out["label"] for out in classify(REVIEWS)}
    assert labels <= SENTIMENT_LABELS, f"labels {labels}, the dataset's: {SENTIMENT_LABELS}"


@pytest.mark.slow
def test_exported_tagger_names_the_tags_in_a_token_classification_pipeline(export) -> None:
    from transformers import pipeline

    tag = pipeline("token-classification", model=str(export("finetune-ner")), device="cpu", ignore_labels=[])
    tags = {entity["entity"] for entity in tag(" ".join(SENTENCES[0]))}
    assert tags and tags <= NER_TAGS, f"tags {tags}, the dataset's: {NER_TAGS}"


def reference_labels(directory: Path, texts: list[str]) -> list[str]:
    """Each text's most likely label by hand: the exported model's logits, its config's id2label."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(directory, local_files_only=True).eval()
    with torch.no_grad():
        logits = model(**tokenizer(texts, return_tensors="pt", padding=True)).logits
    return [model.config.id2label[int(i)] for i in logits.argmax(-1)]


@pytest.mark.slow
def test_lmforge_predict_labels_a_file_with_the_exported_classifier(export, journeys: Journeys,
                                                                    tmp_path: Path) -> None:
    exported = export("finetune-sentiment")
    (tmp_path / "reviews.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in REVIEWS))
    journeys.lmforge(["predict", str(exported), "--input", "reviews.jsonl", "--output", "predictions.jsonl"],
                     tmp_path, limit=QUICK_LIMIT).expect_ok()
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == REVIEWS
    assert [r["prediction"] for r in rows] == reference_labels(exported, REVIEWS)
    assert {r["prediction"] for r in rows} <= SENTIMENT_LABELS


@pytest.mark.slow
def test_lmforge_predict_tags_a_file_with_the_exported_tagger(export, journeys: Journeys, tmp_path: Path) -> None:
    exported = export("finetune-ner")
    (tmp_path / "sentences.jsonl").write_text("".join(json.dumps({"tokens": s}) + "\n" for s in SENTENCES))
    journeys.lmforge(["predict", str(exported), "--input", "sentences.jsonl", "--text-column", "tokens",
                      "--output", "tags.jsonl"], tmp_path, limit=QUICK_LIMIT).expect_ok()
    rows = [json.loads(line) for line in (tmp_path / "tags.jsonl").read_text().splitlines()]
    assert len(rows) == len(SENTENCES)
    for row, words in zip(rows, SENTENCES):
        assert len(row["prediction"]) == len(words)
        assert set(row["prediction"]) <= NER_TAGS
