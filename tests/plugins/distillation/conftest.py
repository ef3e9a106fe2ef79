"""Tiny teachers for the distiller tests, saved as local HF directories with their tokenizer."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

import lmforge
from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining, load_tokenizer, train_tokenizer
from lmforge.core.module import LanguageModel

BUNDLED_TEXT = Path(lmforge.__file__).parent / "data" / "corpus" / "val.txt"
GPT2_NO_DROPOUT = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
BERT_NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


@pytest.fixture(scope="session")
def tokenizer_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``bpe`` (400 tokens), ``bpe_small`` (300 tokens) and ``wordpiece`` (200 tokens) tokenizer directories."""
    texts = [line for line in BUNDLED_TEXT.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = {}
    for name, algorithm, size in [("bpe", "bpe", 400), ("bpe_small", "bpe", 300), ("wordpiece", "wordpiece", 200)]:
        directory = tmp_path_factory.mktemp(f"tokenizer-{name}")
        train_tokenizer(texts, TokenizerTraining(vocab_size=size), algorithm).save_pretrained(str(directory))
        out[name] = directory
    return out


@pytest.fixture(scope="session")
def make_teacher(tmp_path_factory: pytest.TempPathFactory,
                 tokenizer_dirs: dict[str, Path]) -> Callable[..., Path]:
    """``make_teacher(arch, layers, width, tokenizer="bpe")``: a randomly initialised, dropout-free
    model saved with its tokenizer; cached per arguments."""
    made: dict[tuple, Path] = {}

    def _make(arch: str = "gpt2", layers: int = 2, width: int = 32, tokenizer: str = "bpe") -> Path:
        key = (arch, layers, width, tokenizer)
        if key in made:
            return made[key]
        tok = load_tokenizer(tokenizer_dirs[tokenizer])
        ids = {"vocab_size": len(tok), "pad_token_id": tok.pad_token_id}
        if arch == "gpt2":
            config = AutoConfig.for_model("gpt2", n_layer=layers, n_embd=width, n_head=2, n_positions=64,
                                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                          **ids, **GPT2_NO_DROPOUT)
            auto = AutoModelForCausalLM
        else:
            config = AutoConfig.for_model("bert", num_hidden_layers=layers, hidden_size=width, num_attention_heads=2,
                                          intermediate_size=2 * width, max_position_embeddings=64,
                                          **ids, **BERT_NO_DROPOUT)
            auto = AutoModelForMaskedLM
        torch.manual_seed(len(made))
        directory = tmp_path_factory.mktemp(f"teacher-{arch}-{layers}x{width}")
        auto.from_config(config).save_pretrained(str(directory))
        tok.save_pretrained(str(directory))
        made[key] = directory
        return directory

    return _make


def text_data(corpus: dict[str, Path], tmp_path: Path, tokenizer_dir: Path) -> TextData:
    return TextData(train=str(corpus["train"]), val=str(corpus["val"]), tokenizer=TokenizerSpec(path=str(tokenizer_dir)),
                    block_size=32, batch_size=4, cache_dir=str(tmp_path / "cache"), seed=0)


@pytest.fixture
def fit(corpus: dict[str, Path], tmp_path: Path) -> Callable[..., Trainer]:
    """``fit(model, tokenizer_dir, steps)``: a short CPU run logging every step to a CSV."""

    def _fit(model: LanguageModel, tokenizer_dir: Path, steps: int = 2) -> Trainer:
        trainer = Trainer(max_steps=steps, accelerator="cpu", logger=CSVLogger(tmp_path, name="run"),
                          enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                          log_every_n_steps=1, limit_val_batches=0, num_sanity_val_steps=0)
        trainer.fit(model, datamodule=text_data(corpus, tmp_path, tokenizer_dir))
        return trainer

    return _fit


@pytest.fixture
def build() -> Callable[..., LanguageModel]:
    """``build(model, tokenizer_dir)``: run the model stage (backbone and plugin setup) without a Trainer."""

    def _build(model: LanguageModel, tokenizer_dir: Path) -> LanguageModel:
        model.tokenizer = load_tokenizer(tokenizer_dir)
        model.configure_model()
        return model

    return _build


def logged(trainer: Trainer) -> list[dict[str, float]]:
    """The training rows of the run's metrics.csv, as floats (empty cells left out)."""
    with open(Path(trainer.logger.log_dir) / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]


@pytest.fixture
def read_logged() -> Callable[[Trainer], list[dict[str, float]]]:
    return logged
