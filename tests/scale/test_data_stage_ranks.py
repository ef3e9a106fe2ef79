"""Data-stage plugins give every rank the same training set, whether a rank reads the cache rank 0 filled or,
on a node without that cache, rebuilds it: their randomness is seeded by the data seed and the documents,
never by the rank or the process."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining
from lmforge.plugins.augmenters.random_swap import RandomSwap
from lmforge.plugins.bias.counterfactual_augmentation import CounterfactualAugmentation

TEXT = [f"she said that {name} liked his {thing} and her {other} number {i}"
        for i, (name, thing, other) in enumerate([("he", "bike", "book"), ("the man", "dog", "cat"),
                                                  ("his father", "car", "coat")] * 12)]


def blocks(tmp_path: Path, cache: str, rank: int) -> torch.Tensor:
    corpus = tmp_path / "train.txt"
    if not corpus.exists():
        corpus.write_text("\n".join(TEXT) + "\n", encoding="utf-8")
    data = TextData(train=str(corpus), val=str(corpus), tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=300)),
                    block_size=16, batch_size=4, cache_dir=str(tmp_path / cache), seed=3)
    module = SimpleNamespace(data_plugins=lambda: [CounterfactualAugmentation(), RandomSwap(alpha=0.3, copies=1)])
    data.trainer = SimpleNamespace(lightning_module=module, logger=None, is_global_zero=rank == 0, global_rank=rank)
    if rank == 0:
        data.prepare_data()
    data.setup("fit")
    return data.datasets["train"].blocks


def test_every_rank_gets_the_same_augmented_training_set(tmp_path: Path) -> None:
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    rank0 = blocks(tmp_path, "shared", rank=0)
    torch.manual_seed(1), random.seed(1), np.random.seed(1)  # another process: its global generators differ
    rank1_shared = blocks(tmp_path, "shared", rank=1)  # reads the cache rank 0 filled
    rank1_own = blocks(tmp_path, "node2", rank=1)  # another node: builds it again, with no cache
    assert torch.equal(rank0, rank1_shared) and torch.equal(rank0, rank1_own)
    plain = TextData(train=str(tmp_path / "train.txt"), val=str(tmp_path / "train.txt"),
                     tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=300)), block_size=16, batch_size=4,
                     cache_dir=str(tmp_path / "plain"), seed=3)
    plain.setup("fit")
    assert len(rank0) > len(plain.datasets["train"].blocks)  # the plugins did add documents (CDA, swapped copies)
