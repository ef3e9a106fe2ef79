"""Token ids as Arrow arrays: batched encoding straight into a ``list<int32>`` column, and packing that
column into blocks with one copy.

`TextData` tokenizes with ``datasets.map`` and packs the cached column. Through the ``transformers``
wrapper, each batch came back as Python lists, had its document separator appended row by row in
Python and was converted again by ``datasets``; packing then combined the column's chunks twice and
widened it to int64, four copies of the corpus's tokens at once. Here the fast tokenizer's
``encode_batch_fast`` (no offsets) encodes a batch, Arrow converts the ids once, the separator is
appended with array operations, and `pack_column` copies each chunk's values once into the blocks.
The column type (``list<int32>``, what ``datasets`` stores for ``input_ids``) and the ids are those of
the wrapper path, so datasets already cached stay valid.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IDS = pa.list_(pa.int32())


def direct_encoder(tokenizer: PreTrainedTokenizerBase) -> object | None:
    """The ``tokenizers.Tokenizer`` behind ``tokenizer`` when encoding with it directly gives the wrapper's ids
    (a fast tokenizer whose backend truncates and pads nothing), else None (use the wrapper)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.truncation is not None or backend.padding is not None:
        return None
    return backend if hasattr(backend, "encode_batch_fast") else None


def encode_arrow(encoder: object, texts: list[str], separator: list[int]) -> pa.ListArray:
    """``texts`` encoded with their special tokens, ``separator`` appended to each: a ``list<int32>`` array."""
    ids = pa.array([e.ids for e in encoder.encode_batch_fast(texts, add_special_tokens=True)], type=IDS)
    return append_to_rows(ids, separator)


def append_to_rows(rows: pa.ListArray, suffix: list[int]) -> pa.ListArray:
    """``rows`` (``list<int32>``, no nulls) with ``suffix`` appended to every row, without a Python loop."""
    if not suffix or len(rows) == 0:
        return rows
    k = len(suffix)
    offsets = rows.offsets.to_numpy().astype(np.int64)
    values = rows.flatten().to_numpy(zero_copy_only=False)
    lengths = np.diff(offsets) + k
    new_offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    out = np.empty(int(new_offsets[-1]), dtype=np.int32)
    is_suffix = np.zeros(len(out), dtype=bool)
    for i in range(k):
        is_suffix[new_offsets[1:] - k + i] = True
    out[~is_suffix] = values
    out[is_suffix] = np.tile(np.asarray(suffix, dtype=np.int32), len(rows))
    return pa.ListArray.from_arrays(pa.array(new_offsets.astype(np.int32)), pa.array(out))


def pack_column(column: pa.ChunkedArray | pa.Array, block_size: int,
                out: Path | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Concatenate the rows of a ``list<int>`` column and cut them into blocks of ``block_size`` tokens.

    The same blocks as `lmforge.core.data.text.pack` over the rows as lists, built with one copy of the
    tokens: each chunk's values go straight into the (N, block_size) int32 result. With ``out``, the result
    is written there chunk by chunk as an ``.npy`` file and returned memory-mapped (copy-on-write), so the
    blocks never sit in memory whole (`lmforge.core.data.block_cache`).

    Returns:
        blocks (N, block_size) int32, each row's length (documents,) int64, and the total number of tokens.
    """
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    lengths = np.concatenate([np.asarray(c.value_lengths(), dtype=np.int64) for c in chunks] or [np.zeros(0, np.int64)])
    total = int(lengths.sum())
    n_blocks = total // block_size
    size = n_blocks * block_size
    if out is None:
        flat = np.empty(size, dtype=np.int32)
        for start, values in _values(chunks, size):
            flat[start:start + len(values)] = values
        return flat.reshape(n_blocks, block_size), lengths, total
    with open(out, "wb") as f:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.int32)), "fortran_order": False,
                  "shape": (n_blocks, block_size)}
        np.lib.format.write_array_header_1_0(f, header)
        for _, values in _values(chunks, size):
            f.write(np.ascontiguousarray(values, dtype=np.int32).data)
    return np.load(out, mmap_mode="c"), lengths, total


def _values(chunks: list[pa.Array], size: int) -> Iterator[tuple[int, np.ndarray]]:
    """The int32 token values of ``chunks`` in order (views of each chunk's buffer), with their offset, up to
    ``size`` tokens."""
    filled = 0
    for chunk in chunks:
        if filled == size:
            return
        values = chunk.flatten().to_numpy(zero_copy_only=False)
        take = min(len(values), size - filled)
        yield filled, values[:take]
        filled += take
