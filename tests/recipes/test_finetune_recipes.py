"""The fine-tuning recipes run a few steps on the bundled labeled sets, alone and after mlm-pretrain,
and their checkpoints export to HF pipelines and feed `lmforge predict`."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from lmforge.cli.main import main

TINY = ("{num_hidden_layers: 1, hidden_size: 32, num_attention_heads: 2, intermediate_size: 64, "
        "max_position_embeddings: 64}")
FAST = ["--trainer.max_steps", "4", "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "2",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--model.backbone.config", TINY, "--data.init_args.batch_size", "8"]


@pytest.fixture(autouse=True)
def no_argv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "argv", ["lmforge"])
    monkeypatch.chdir(tmp_path)


def logged(run: Path, key: str) -> list[float]:
    with open(run / "metrics.csv") as f:
        return [float(r[key]) for r in csv.DictReader(f) if r.get(key)]


@pytest.mark.slow
def test_finetune_sentiment_runs_exports_and_predicts(tmp_path: Path) -> None:
    from transformers import pipeline

    assert main(["fit", "--config", "finetune-sentiment", *FAST, "--data.init_args.max_length", "64",
                 "--data.init_args.tokenizer.train.vocab_size", "400"]) == 0
    run = tmp_path / "runs" / "finetune-sentiment" / "version_0"
    assert len(logged(run, "val/macro_f1")) == 2 and len(logged(run, "val/accuracy")) == 2
    labels = json.loads((run / "labels.json").read_text())
    assert labels["names"] == ["negative", "neutral", "positive"]
    assert labels["counts"]["train"] == {"negative": 1000, "neutral": 1000, "positive": 1000}
    assert list((run / "checkpoints").glob("best-*.ckpt"))  # chosen on val/macro_f1

    assert main(["export", str(run / "checkpoints" / "last.ckpt"), str(tmp_path / "hf")]) == 0
    (result,) = pipeline("text-classification", model=str(tmp_path / "hf"))("The soup was cold. Never again.")
    assert result["label"] in labels["names"]
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("I loved the build quality.\nThe screen broke after a week.\n")
    assert main(["predict", str(tmp_path / "hf"), "--input", str(reviews), "--output", "preds.jsonl"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "preds.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == ["I loved the build quality.", "The screen broke after a week."]
    assert all(r["prediction"] in labels["names"] and set(r["scores"]) == set(labels["names"]) for r in rows)


@pytest.mark.slow
def test_finetune_ner_starts_from_an_mlm_pretrain_checkpoint(tmp_path: Path) -> None:
    assert main(["fit", "--config", "mlm-pretrain", *FAST, "--data.init_args.block_size", "32",
                 "--data.init_args.tokenizer.train.vocab_size", "400"]) == 0
    pretrain = tmp_path / "runs" / "mlm-pretrain" / "version_0"
    assert main(["fit", "--config", "finetune-ner", *FAST, "--data.init_args.max_length", "64",
                 "--model.backbone.checkpoint", str(pretrain / "checkpoints" / "last.ckpt"),
                 "--data.init_args.tokenizer.path", str(pretrain / "tokenizer")]) == 0
    run = tmp_path / "runs" / "finetune-ner" / "version_0"
    assert len(logged(run, "val/entity_f1")) == 2
    assert json.loads((run / "labels.json").read_text())["names"][0] == "O"
    words = tmp_path / "words.jsonl"
    words.write_text(json.dumps({"tokens": ["Maria", "Lopez", "visited", "Quito", "."]}) + "\n")
    assert main(["predict", str(run / "checkpoints" / "last.ckpt"), "--input", str(words),
                 "--text-column", "tokens", "--output", "tags.jsonl"]) == 0
    (row,) = [json.loads(line) for line in (tmp_path / "tags.jsonl").read_text().splitlines()]
    assert len(row["prediction"]) == 5
