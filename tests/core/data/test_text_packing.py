"""lmforge.core.data: packing documents into blocks, and TextData end to end (no trainer)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from lmforge.core.data.text import TextData, pack, pack_flat
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining

# -- pack / pack_flat ----------------------------------------------------------------------------


def _reference_block_docs(lengths: list[int], n_blocks: int, block_size: int) -> list[int]:
    """The document holding the first token of each block, by walking the documents."""
    out = []
    for b in range(n_blocks):
        start, doc_start = b * block_size, 0
        for d, length in enumerate(lengths):
            if doc_start <= start < doc_start + length:
                out.append(d)
                break
            doc_start += length
    return out


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("block_size", [1, 7, 64])
def test_pack_loses_and_duplicates_nothing_but_the_declared_tail(seed: int, block_size: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 40, size=rng.integers(1, 60)).tolist()  # empty documents included
    docs = [rng.integers(0, 50_000, size=n).tolist() for n in lengths]
    flat = [t for doc in docs for t in doc]

    blocks, block_docs, dropped = pack(docs, block_size)

    assert blocks.dtype == np.int64 and blocks.shape == (len(flat) // block_size, block_size)
    assert 0 <= dropped < block_size
    assert blocks.size + dropped == len(flat)
    assert blocks.reshape(-1).tolist() == flat[: len(flat) - dropped]
    assert block_docs.tolist() == _reference_block_docs(lengths, len(blocks), block_size)

    again = pack_flat(np.asarray(flat, dtype=np.int64), np.asarray(lengths, dtype=np.int64), block_size)
    assert np.array_equal(again[0], blocks) and np.array_equal(again[1], block_docs) and again[2] == dropped


def test_pack_of_fewer_tokens_than_a_block_gives_no_blocks() -> None:
    blocks, block_docs, dropped = pack([[1, 2], [3]], block_size=4)
    assert blocks.shape == (0, 4) and block_docs.shape == (0,) and dropped == 3


# -- TextData ------------------------------------------------------------------------------------

WORDS = "river stone light garden window bread music quiet evening market paper train city cloud".split()


def _write_docs(path: Path, n_docs: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    docs = [f"note {i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 15))) + "."
            for i in range(n_docs)]  # the number makes every document unique
    path.write_text("\n".join(docs) + "\n", encoding="utf-8")
    return docs


def _text_data(tmp_path: Path, train: Path, val: Path | None, **kwargs) -> TextData:
    settings = dict(tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=300, algorithm="bpe")),
                    block_size=16, batch_size=4, cache_dir=str(tmp_path / "cache"), seed=0)
    data = TextData(train=str(train), val=str(val) if val else None, **{**settings, **kwargs})
    data.setup("fit")
    return data


@pytest.fixture
def corpus(tmp_path: Path) -> dict[str, list[str]]:
    return {"train": _write_docs(tmp_path / "train.txt", 120, seed=1),
            "val": _write_docs(tmp_path / "val.txt", 20, seed=2)}


def _flat(data: TextData, split: str) -> list[int]:
    return data.datasets[split].blocks.reshape(-1).tolist()


def test_train_blocks_are_the_documents_ids_with_eos_after_each(tmp_path: Path, corpus: dict) -> None:
    data = _text_data(tmp_path, tmp_path / "train.txt", tmp_path / "val.txt")
    tok, eos = data.tokenizer, data.tokenizer.eos_token_id
    for split in ("train", "val"):
        expected = []
        for doc in corpus[split]:
            ids = tok(doc)["input_ids"]
            assert eos not in ids  # the tokenizer leaves a text as it is (a prompt is continued) ...
            expected += [*ids, eos]  # ... and packing closes each document with one EOS
        got = _flat(data, split)
        dropped = len(expected) - len(got)
        assert 0 <= dropped < 16
        assert got == expected[: len(got)]
    # EOS separates documents: splitting the stream at EOS gives the documents back.
    pieces = tok.decode(_flat(data, "train")).split(tok.eos_token)
    assert pieces[: len(pieces) - 1] == corpus["train"][: len(pieces) - 1]


def test_train_dataloader_batches_are_int64_and_reproducible(tmp_path: Path, corpus: dict) -> None:
    def batches(seed: int) -> list[torch.Tensor]:
        data = _text_data(tmp_path, tmp_path / "train.txt", tmp_path / "val.txt", seed=seed)
        return [b["input_ids"] for b in data.train_dataloader()]

    first, second, other = batches(0), batches(0), batches(1)
    assert all(b.shape == (4, 16) and b.dtype == torch.int64 for b in first)
    assert len(first) == len(second) and all(torch.equal(a, b) for a, b in zip(first, second))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))  # the seed drives the shuffle
    # Shuffled, but every block of the (full) batches is a training block.
    data = _text_data(tmp_path, tmp_path / "train.txt", tmp_path / "val.txt")
    rows = {tuple(r) for r in data.datasets["train"].blocks.tolist()}
    assert all(tuple(r) in rows for b in first for r in b.tolist())


def test_corpus_shorter_than_one_block_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "tiny.txt").write_text("a b\n")
    (tmp_path / "val.txt").write_text("a b c d e f g h i j k l m n o p q r s t u v w\n")
    with pytest.raises(ValueError) as excinfo:
        _text_data(tmp_path, tmp_path / "tiny.txt", tmp_path / "val.txt", block_size=64)
    message = str(excinfo.value)
    assert message.startswith("data.train:") and "data.block_size=64" in message


def test_val_fraction_holds_out_disjoint_documents(tmp_path: Path) -> None:
    docs = _write_docs(tmp_path / "all.txt", 200, seed=3)
    data = _text_data(tmp_path, tmp_path / "all.txt", None, val_fraction=0.1, block_size=4)
    eos = data.tokenizer.eos_token

    def whole_docs(split: str) -> list[str]:
        return data.tokenizer.decode(_flat(data, split)).split(eos)[:-1]  # the last piece may be cut

    train, val = whole_docs("train"), whole_docs("val")
    assert set(train) <= set(docs) and set(val) <= set(docs)
    assert not set(train) & set(val)
    assert 15 <= len(val) <= 20 and len(train) + len(val) >= 198
