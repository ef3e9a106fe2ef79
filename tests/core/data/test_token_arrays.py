"""token_arrays: encoding into Arrow and packing a chunked column, against plain Python references."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from lmforge.core.data.text import TextData
from lmforge.core.data.token_arrays import IDS, append_to_rows, pack_column
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining

WORDS = "river stone light garden window bread music quiet evening market paper train city cloud".split()


def _rows(seed: int, n: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(1000) for _ in range(rng.randrange(0, 9))] for _ in range(n)]


@pytest.mark.parametrize("suffix", [[], [7], [7, 8]])
def test_append_to_rows_is_the_suffix_after_every_row(suffix: list[int]) -> None:
    rows = _rows(0, 50)
    got = append_to_rows(pa.array(rows, type=IDS), suffix)
    assert got.to_pylist() == [[*r, *suffix] for r in rows]


@pytest.mark.parametrize("block_size", [1, 5, 16])
def test_pack_column_over_sliced_chunks_is_concatenate_then_split(block_size: int) -> None:
    rows = _rows(1, 80)
    whole = pa.array(rows, type=IDS)
    column = pa.chunked_array([whole.slice(0, 30), whole.slice(30, 1), whole.slice(31)])  # sliced chunks
    blocks, lengths, total = pack_column(column, block_size)
    flat = [i for r in rows for i in r]
    n = len(flat) // block_size
    assert blocks.dtype == np.int32 and blocks.shape == (n, block_size)
    assert blocks.reshape(-1).tolist() == flat[: n * block_size]
    assert lengths.tolist() == [len(r) for r in rows] and total == len(flat)


@pytest.mark.parametrize("max_document_chars", [None, 40])  # 40: long documents go through encode_long
def test_textdata_blocks_are_tokenize_then_concatenate_then_split(tmp_path: Path, max_document_chars) -> None:
    rng = random.Random(3)
    docs = [f"note {i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30))) + "." for i in range(150)]
    (tmp_path / "train.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    (tmp_path / "val.txt").write_text("\n".join(docs[:20]) + "\n", encoding="utf-8")
    data = TextData(train=str(tmp_path / "train.txt"), val=str(tmp_path / "val.txt"),
                    tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=300, algorithm="bpe")),
                    block_size=16, batch_size=4, cache_dir=str(tmp_path / "cache"), seed=0,
                    max_document_chars=max_document_chars)
    data.setup("fit")
    tok = data.tokenizer
    flat = [i for doc in docs for i in [*tok(doc)["input_ids"], tok.eos_token_id]]
    n = len(flat) // 16
    assert data.datasets["train"].blocks.reshape(-1).tolist() == flat[: n * 16]
