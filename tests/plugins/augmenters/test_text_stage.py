"""What every text-stage augmenter promises: seeded, unchanged at rate 0, copies vs in place,
empty and non-ASCII text, and (through TextData) training split only."""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lmforge.core.backbone import Backbone
from lmforge.core.data.files import bundled_data_dir
from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining
from lmforge.core.module import LanguageModel
from lmforge.plugins.augmenters.char_noise import CharNoise
from lmforge.plugins.augmenters.random_deletion import RandomDeletion
from lmforge.plugins.augmenters.random_insertion import RandomInsertion
from lmforge.plugins.augmenters.random_swap import RandomSwap
from lmforge.plugins.augmenters.synonym_replacement import SynonymReplacement
from lmforge.plugins.objectives.causal_lm import CausalLM

#: Each text augmenter at a given rate (and copies).
AUGMENTERS: dict[str, Callable[..., object]] = {
    "RandomDeletion": lambda rate, copies=1: RandomDeletion(p=rate, copies=copies),
    "RandomSwap": lambda rate, copies=1: RandomSwap(alpha=rate, copies=copies),
    "RandomInsertion": lambda rate, copies=1: RandomInsertion(alpha=rate, copies=copies),
    "SynonymReplacement": lambda rate, copies=1: SynonymReplacement(alpha=rate, copies=copies),
    "CharNoise": lambda rate, copies=1: CharNoise(p=rate, copies=copies),
}
NAMES = sorted(AUGMENTERS)
DOCS = bundled_data_dir().joinpath("corpus", "train.txt").read_text(encoding="utf-8").splitlines()[:40]


def run(augmenter, texts: list[str], seed: int, **columns: list) -> dict[str, list]:
    return augmenter.process_text({"text": list(texts), **columns}, random.Random(seed))


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_output_other_seed_other_output(name):
    augmenter = AUGMENTERS[name](0.2)
    first = run(augmenter, DOCS, seed=1)
    assert first == run(augmenter, DOCS, seed=1)
    assert first != run(augmenter, DOCS, seed=2)


@pytest.mark.parametrize("name", NAMES)
def test_rate_zero_leaves_text_unchanged(name):
    assert run(AUGMENTERS[name](0.0, copies=0), DOCS, seed=1)["text"] == DOCS
    assert run(AUGMENTERS[name](0.0, copies=1), DOCS, seed=1)["text"] == DOCS + DOCS


@pytest.mark.parametrize("name", NAMES)
def test_copies_keep_the_originals_and_other_columns(name):
    texts, labels = DOCS[:5], [0, 1, 2, 3, 4]
    out = run(AUGMENTERS[name](0.3, copies=2), texts, seed=0, label=labels)
    assert out["text"][:5] == texts  # originals first, then each round of copies
    assert out["label"] == labels * 3
    assert sum(a != b for a, b in zip(out["text"][5:], texts * 2)) >= 8  # the copies are augmented
    in_place = run(AUGMENTERS[name](0.3, copies=0), texts, seed=0, label=labels)
    assert len(in_place["text"]) == 5 and in_place["label"] == labels
    assert in_place["text"] != texts


@pytest.mark.parametrize("name", NAMES)
def test_empty_lines_and_non_ascii_text(name):
    texts = ["", "   ", "word", "Ça va très bien, naïve café.", "東京 は 大きい 都市 です",
             "Emoji ☕ happy dog 🐕 ran fast!"]
    augmenter = AUGMENTERS[name](0.5, copies=0)
    for seed in range(5):
        out = run(augmenter, texts, seed)["text"]
        assert out[:2] == ["", "   "]
        for before, after in zip(texts[2:], out[2:]):
            assert after.strip(), (before, after)
            # Nothing is corrupted: the only new characters are ASCII letters (typos, English synonyms).
            assert set(after) - set(before) <= set(string.ascii_letters + " "), (before, after)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r"RandomDeletion: p must be in \[0, 1\]"):
        RandomDeletion(p=1.5)
    with pytest.raises(ValueError, match="copies must be >= 0"):
        RandomSwap(copies=-1)
    with pytest.raises(ValueError, match="operations must be a non-empty list"):
        CharNoise(operations=["smudge"])
    with pytest.raises(ValueError, match="no 'text' column"):
        RandomSwap().process_text({"tokens": [["a"]]}, random.Random(0))


# -- through TextData: training split only, seeded corpus ---------------------------------------------


def build(augmenters: list, corpus: dict[str, Path], cache: Path, seed: int) -> TextData:
    data = TextData(train=str(corpus["train"]), val=str(corpus["val"]), block_size=16, batch_size=4, seed=seed,
                    tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=300)), cache_dir=str(cache))
    model = LanguageModel(Backbone(), CausalLM(), augmenters=augmenters)
    data.trainer = SimpleNamespace(lightning_module=model)  # what TextData reads its data-stage plugins from
    data.prepare_data()
    return data


@pytest.mark.parametrize("name", NAMES)
def test_only_the_training_split_changes_and_the_corpus_follows_the_seed(name, corpus, tmp_path):
    plain = build([], corpus, tmp_path / "plain", seed=0)
    augmented = build([AUGMENTERS[name](0.3)], corpus, tmp_path / "a", seed=0)
    assert torch.equal(augmented.datasets["val"].blocks, plain.datasets["val"].blocks)
    assert len(augmented.datasets["train"]) > 1.5 * len(plain.datasets["train"])  # a copy of each document

    again = build([AUGMENTERS[name](0.3)], corpus, tmp_path / "b", seed=0)  # fresh cache: recomputed
    other = build([AUGMENTERS[name](0.3)], corpus, tmp_path / "c", seed=1)
    assert torch.equal(again.datasets["train"].blocks, augmented.datasets["train"].blocks)
    train = augmented.datasets["train"].blocks
    assert train.shape != other.datasets["train"].blocks.shape or not torch.equal(train, other.datasets["train"].blocks)
