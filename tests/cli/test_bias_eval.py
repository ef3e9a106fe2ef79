"""``lmforge bias-eval`` scores an lmforge checkpoint or an exported HF directory, found through the
``lmforge.commands`` entry point."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from lightning.pytorch import Trainer

from lmforge.cli.export import export_checkpoint
from lmforge.cli.main import main
from lmforge.core.backbone import Backbone
from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining
from lmforge.core.module import LanguageModel
from lmforge.plugins.bias.probe import read_pairs, score_pairs
from lmforge.plugins.objectives.causal_lm import CausalLM
from lmforge.plugins.objectives.masked_lm import MaskedLM

BACKBONES = {
    "causal": (Backbone("gpt2", {"n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 128}), CausalLM, "bpe"),
    "masked": (Backbone("bert", {"num_hidden_layers": 1, "hidden_size": 16, "num_attention_heads": 2,
                                 "intermediate_size": 32, "max_position_embeddings": 128}), MaskedLM, "wordpiece"),
}


def train_checkpoint(kind: str, corpus: dict[str, Path], tmp_path: Path) -> tuple[Path, LanguageModel]:
    backbone, objective, algorithm = BACKBONES[kind]
    data = TextData(train=str(corpus["train"]), val=str(corpus["val"]), block_size=32, batch_size=4,
                    tokenizer=TokenizerSpec(train=TokenizerTraining(algorithm=algorithm, vocab_size=400)),
                    cache_dir=str(tmp_path / "cache"))
    model = LanguageModel(backbone, objective())
    trainer = Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    return tmp_path / "model.ckpt", model


def small_pairs(tmp_path: Path) -> Path:
    pairs = [p for p in read_pairs("lmforge:bias/probe_pairs.csv")][::20]
    path = tmp_path / "pairs.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sent_more", "sent_less", "stereo_antistereo", "bias_type"])
        writer.writerows((p.sent_more, p.sent_less, p.direction, p.bias_type) for p in pairs)
    return path


def printed_scores(out: str) -> dict[str, float]:
    rows = [line.split() for line in out.splitlines()[3:] if line and not line.startswith("-")]
    return {row[0]: float(row[2]) for row in rows}


@pytest.mark.parametrize("kind", ["causal", "masked"])
def test_bias_eval_prints_the_probe_scores(kind: str, corpus: dict[str, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    ckpt, model = train_checkpoint(kind, corpus, tmp_path)
    pairs_file = small_pairs(tmp_path)
    expected = score_pairs(model.backbone, model.tokenizer, read_pairs(str(pairs_file)), kind).scores()
    target = ckpt if kind == "causal" else export_checkpoint(ckpt, tmp_path / "hf")
    assert main(["bias-eval", str(target), "--pairs", str(pairs_file)]) == 0
    out = capsys.readouterr().out
    assert f"({kind} LM)" in out
    assert printed_scores(out) == pytest.approx({k: round(v, 1) for k, v in expected.items()}, abs=0.051)


def test_bias_eval_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("sent_more,sent_less\na,b\n")
    assert main(["bias-eval", str(tmp_path), "--pairs", str(bad)]) == 1
    assert "bad.csv lacks the column(s) ['stereo_antistereo', 'bias_type']" in capsys.readouterr().err
    assert main(["bias-eval", str(tmp_path / "none.ckpt")]) == 1
    assert "neither a checkpoint file nor a model directory" in capsys.readouterr().err
