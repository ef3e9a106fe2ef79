"""TextData: raw text files -> data-stage plugins -> tokens -> packed blocks.

Files are read with HF ``datasets`` (``txt``: one document per non-empty
line; ``jsonl``/``csv``/``parquet``: one document per row, from
``text_column``), so tokenization is batched and cached on disk. Packing
follows HF ``run_clm.py``'s ``group_texts`` except that it concatenates the
whole split, so only the split's last partial block is dropped rather than
one per map batch.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, Dataset

from lmforge.core import static
from lmforge.core.data.base import BaseTextData, fingerprint
from lmforge.core.data.block_cache import BlockWriter, blocks_key, load_blocks, read_alias, tokenizer_digest
from lmforge.core.data.files import content_key, documents_dataset, map_repairing_cache, resolve_files
from lmforge.core.data.token_arrays import IDS, direct_encoder, encode_arrow, pack_column
from lmforge.core.data.tokenizer import TokenizerSpec, document_separator, encode_long, load_tokenizer
from lmforge.core.plugins import overrides

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from lmforge.core.data.streaming import StreamingLoader
if static.TYPE_CHECKING:  # not run by the recipe parser: see lmforge.core.static
    import datasets

log = logging.getLogger(__name__)
#: Documents per ``datasets.map`` batch when tokenizing: one fast-tokenizer call, spread over its thread pool.
TOKENIZE_BATCH = 1_000


def pack(token_lists: Sequence[Sequence[int]] | np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Concatenate documents and cut them into blocks of ``block_size`` tokens.

    Returns:
        blocks (N, block_size), the index of the document each block starts
        in (N,), and the number of tokens dropped from the end.
    """
    lengths = np.fromiter((len(t) for t in token_lists), dtype=np.int64, count=len(token_lists))
    flat = np.fromiter((i for t in token_lists for i in t), dtype=np.int64, count=int(lengths.sum()))
    return pack_flat(flat, lengths, block_size)


def pack_flat(flat: np.ndarray, lengths: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """`pack` for documents already concatenated into ``flat`` with ``lengths``."""
    n_blocks = len(flat) // block_size
    blocks = flat[: n_blocks * block_size].reshape(n_blocks, block_size)
    doc_starts = np.cumsum(lengths) - lengths
    block_docs = np.searchsorted(doc_starts, np.arange(n_blocks) * block_size, side="right") - 1
    return blocks, block_docs, len(flat) - n_blocks * block_size


class PackedBlocks(Dataset):
    """Fixed-length token blocks; ``__getitems__`` gathers a batch in one index."""

    def __init__(self, blocks: np.ndarray) -> None:
        self.blocks = torch.from_numpy(np.ascontiguousarray(blocks, dtype=np.int32))

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.blocks[index].long()}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return {"input_ids": self.blocks[torch.as_tensor(indices)].long()}


def _collate_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``PackedBlocks.__getitems__`` already returns a batch."""
    return batch


def block_weights(doc_weights: torch.Tensor, lengths: np.ndarray, block_size: int, n_blocks: int) -> torch.Tensor:
    """Sampling weight of each packed block: the mean weight of its tokens, each token carrying its document's.

    A block that holds pieces of several documents is weighted by how many of its tokens each contributes,
    so a short document that starts no block still counts. Computed from cumulative sums, O(documents + blocks).
    """
    lengths_t = torch.from_numpy(np.asarray(lengths, dtype=np.int64))
    ends = torch.cumsum(lengths_t, 0)  # token offset where each document ends
    starts = ends - lengths_t
    mass = torch.cat([torch.zeros(1, dtype=torch.double), torch.cumsum(doc_weights.double() * lengths_t, 0)])

    def cumulative(x: torch.Tensor) -> torch.Tensor:  # total token weight before offset x
        doc = (torch.searchsorted(ends, x, right=True)).clamp(max=len(lengths_t) - 1)
        return mass[doc] + doc_weights.double()[doc] * (x - starts[doc]).clamp(min=0)

    edges = torch.arange(n_blocks + 1, dtype=torch.int64) * block_size
    cum = cumulative(edges)
    return (cum[1:] - cum[:-1]) / block_size



class TextData(BaseTextData):
    """Raw text for language modelling: packed blocks of ``block_size`` tokens.

    Args:
        train: Training files: paths or globs (``txt``, ``jsonl``, ``csv``,
            ``parquet``). ``lmforge:corpus/train.txt`` names a file bundled
            with lmforge.
        val: Validation files; when None, ``val_fraction`` of the training
            documents are held out.
        test: Test files, read by ``lmforge test`` only; when None, ``test``
            scores the validation split (and says so).
        val_fraction: Share of training documents held out when ``val`` is None.
        text_column: Column holding the text in ``jsonl``/``csv``/``parquet`` files.
        tokenizer: A local tokenizer (``path``) or how to train one (``train``).
        block_size: Tokens per training example.
        batch_size: Examples per batch (per device).
        num_workers: DataLoader worker processes.
        cache_dir: Where tokenized datasets and trained tokenizers are cached
            (default ``$LMFORGE_CACHE`` or ``~/.cache/lmforge``).
        seed: Seed of the data-stage plugins and the shuffling; None takes the
            run's ``seed_everything``.
        max_document_chars: Documents longer than this many characters are
            tokenized (and the tokenizer trained) in pieces cut just before a
            space, which keeps memory bounded and gives the whole document's
            tokens (see docs/reliability.md); None tokenizes every document in
            one piece, however long.
        skip_bad_lines: In ``jsonl`` files, skip lines that are not a JSON
            object (and say how many, per file) instead of stopping at the first.
        streaming: Read the training files lazily, tokenizing and packing on
            the fly (`lmforge.core.data.streaming`), instead of tokenizing them
            into the cache first: for corpora larger than memory or disk
            cache. Needs ``val``; the validation split is built as without
            streaming. Resuming with ``--ckpt_path`` continues the epoch where
            it stopped (see docs/scaling.md).
        streaming_tokenizer_documents: With ``streaming`` and a tokenizer to
            train (no ``tokenizer.path``), train it on the first this many
            training documents, in file order.
    """

    row_name = "document"

    def __init__(
        self,
        train: str | list[str],
        val: str | list[str] | None = None,
        test: str | list[str] | None = None,
        val_fraction: float = 0.05,
        text_column: str = "text",
        tokenizer: TokenizerSpec | None = None,
        block_size: int = 256,
        batch_size: int = 16,
        num_workers: int = 0,
        cache_dir: str | None = None,
        seed: int | None = None,
        max_document_chars: int | None = 100_000,
        skip_bad_lines: bool = False,
        streaming: bool = False,
        streaming_tokenizer_documents: int = 100_000,
    ) -> None:
        if max_document_chars is not None and max_document_chars < 1:
            raise ValueError(f"data.max_document_chars must be at least 1 (or null), got {max_document_chars}.")
        if block_size < 2:
            raise ValueError(f"data.block_size must be at least 2, got {block_size}.")
        super().__init__(train=train, val=val, test=test, val_fraction=val_fraction, tokenizer=tokenizer,
                         batch_size=batch_size, num_workers=num_workers, cache_dir=cache_dir, seed=seed)
        self.text_column = text_column
        self.block_size = block_size
        self.max_document_chars = max_document_chars
        self.skip_bad_lines = skip_bad_lines
        if streaming and val is None:
            raise ValueError(
                "data.streaming needs data.val (validation files): holding out data.val_fraction of a stream would "
                "read all of it first. Give data.val, or set data.streaming to false."
            )
        if streaming_tokenizer_documents < 1:
            raise ValueError(
                f"data.streaming_tokenizer_documents must be at least 1, got {streaming_tokenizer_documents}."
            )
        self.streaming = streaming
        self.streaming_tokenizer_documents = streaming_tokenizer_documents
        self.datasets: dict[str, PackedBlocks] = {}
        self._writer: BlockWriter | None = None  # while the splits are built into a new block cache entry

    # -- loaders ---------------------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        if self.streaming:
            return self._stream_loader()
        return super().train_dataloader()

    def _collate(self) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        return _collate_batch

    def _stream_loader(self) -> StreamingLoader:
        """Blocks read, tokenized and packed on the fly; each (rank, worker) reads its own part of the files."""
        from lmforge.core.data.streaming import StreamingBlocks, StreamingLoader  # torchdata only for streaming runs

        blocks = StreamingBlocks(resolve_files(self.train_files, "data.train"),
                                 _TokenizeTexts(self.tokenizer, self.max_document_chars), self.block_size,
                                 self.text_column, *self._rank_world(), skip_bad_rows=self.skip_bad_lines)
        # A batch may hold fewer blocks at the end of a worker's stream: no block is dropped. Workers are not
        # persistent: each epoch starts them anew, so a position restored for one epoch cannot leak into the next.
        return StreamingLoader(blocks, self.trainer, batch_size=self.batch_size, num_workers=self.num_workers,
                               pin_memory=torch.cuda.is_available(), generator=torch.Generator().manual_seed(self.seed))

    # -- building --------------------------------------------------------------------------------

    def _build(self) -> None:
        if self.datasets:
            return
        if self.streaming:
            self._check_model()
            self._build_streaming()
            return
        self._check_model()  # before any file is read, as in BaseTextData._build
        parts = self._block_parts()
        given = self._given_tokenizer() if parts is not None else None
        digest = tokenizer_digest(given, document_separator(given)) if given is not None else None
        if parts is None or (given is not None and digest is None):  # not cached: blocks in memory
            super()._build()
            return
        root = self.cache_dir / "blocks"
        if given is None:  # a tokenizer to train: the entry is found through its training settings
            training, algorithm = self._tokenizer_training()
            alias = blocks_key({**parts, "tokenizer_training": [repr(training), algorithm]})
            name = read_alias(root, alias)
        else:
            alias, name = None, blocks_key({**parts, "tokenizer": digest})
        if name is not None and self._read_blocks(root / name, given):
            return
        self._writer = BlockWriter(root)
        try:
            super()._build()
            if self._block_parts() != parts:  # a file changed since it was hashed: keep these blocks out of the cache
                self._writer.abandon()
                return
            digest = tokenizer_digest(self.tokenizer, document_separator(self.tokenizer))
            self._writer.commit(blocks_key({**parts, "tokenizer": digest}), self.tokenizer, alias)
        except BaseException:
            self._writer.abandon()
            raise
        finally:
            self._writer = None

    def _block_parts(self) -> dict[str, object] | None:
        """What this run's blocks depend on besides the tokenizer, for the block cache's key
        (`lmforge.core.data.block_cache`); None when its blocks are not cached (data-stage plugins)."""
        if self._plugins():
            return None
        files = self.data_files()
        if not self.reads_test_split():
            files.pop("data.test", None)
        return {
            "files": {key: content_key(paths) for key, paths in files.items()},
            "hold_out": None if self.val_files is not None else [self.val_fraction, self.seed],
            "text_column": self.text_column, "skip_bad_lines": self.skip_bad_lines,
            "max_document_chars": self.max_document_chars, "block_size": self.block_size,
        }

    def _read_blocks(self, directory: Path, given: PreTrainedTokenizerBase | None) -> bool:
        """Every split's blocks from the block cache entry ``directory``, if it holds one, with the ``given``
        tokenizer or, for a run that trains one, the one the entry was made with."""
        entry = load_blocks(directory)
        if entry is None:
            return False
        blocks, counts, stored = entry
        self.tokenizer = given if given is not None else load_tokenizer(stored)
        for split, array in blocks.items():
            self.datasets[split] = PackedBlocks(array)
            self._log_split(split, counts[split])
        log.info("data: the blocks were read from the cache %s", directory)
        return True

    def _log_split(self, split: str, counts: dict[str, int]) -> None:
        log.info("%s: %d documents, %d tokens, %d blocks of %d (%d tokens dropped at the end)", split,
                 counts["documents"], counts["tokens"], counts["blocks"], counts["block_size"],
                 counts["tokens"] - counts["blocks"] * counts["block_size"])

    def _make_tokenizer(self, train: datasets.Dataset) -> PreTrainedTokenizerBase:
        return self._get_tokenizer(train, max_chars=self.max_document_chars)

    def _build_streaming(self) -> None:
        """The tokenizer and the validation split; the training split is read while training (`_stream_loader`)."""
        plugins = self._plugins()
        unsupported = [f"{type(p).__name__}.{hook}" for p in plugins for hook in ("process_text", "sample_weights")
                       if overrides(p, hook) and (hook == "sample_weights" or "train" in p.splits)]
        if unsupported:
            raise ValueError(
                f"data.streaming: the training split is not run through data-stage plugin hooks yet, and this "
                f"recipe has {', '.join(unsupported)}. Set data.streaming to false, or remove those plugins."
            )
        given = self._given_tokenizer()  # only a tokenizer to train needs the sample read
        self.tokenizer = given if given is not None else self._make_tokenizer(
            self._tokenizer_sample(resolve_files(self.train_files, "data.train")))
        self._build_split("val", self._read(self.val_files, "data.val"), plugins)
        if self.reads_test_split():
            self._build_split("test", self._read(self.test_files, "data.test"), plugins)

    def _tokenizer_sample(self, files: list[Path]) -> datasets.Dataset:
        """The first ``streaming_tokenizer_documents`` training documents, which a tokenizer to train is trained
        on (read only when one is: not with ``tokenizer.path`` or a checkpoint's tokenizer)."""
        import datasets

        from lmforge.core.data.streaming import StreamingBlocks

        stream = StreamingBlocks(files, None, self.block_size, self.text_column,
                                 skip_bad_rows=self.skip_bad_lines).documents(0, 1)
        texts = list(itertools.islice(stream, self.streaming_tokenizer_documents))
        if not texts:
            raise ValueError(f"data.train: {[str(f) for f in files]} hold no non-empty document.")
        log.info("data.streaming: the tokenizer to train is trained (or found cached) for the first %d training "
                 "documents (data.streaming_tokenizer_documents=%d)", len(texts), self.streaming_tokenizer_documents)
        return datasets.Dataset.from_dict({"text": texts})

    def _read(self, files: list[str], key: str) -> datasets.Dataset:
        """The documents of ``files`` (recipe key ``key``), through the content-keyed dataset cache."""
        return documents_dataset(resolve_files(files, key), key=key, text_column=self.text_column,
                                 cache_dir=str(self.cache_dir / "datasets"), skip_bad_lines=self.skip_bad_lines)

    def _make_dataset(self, rows: datasets.Dataset, split: str) -> PackedBlocks:
        return self._layout(rows, split)

    def _layout(self, docs: datasets.Dataset, split: str) -> PackedBlocks:
        tokenizer = self.tokenizer
        tokens = map_repairing_cache(
            docs.with_format("arrow"), _Tokenize(tokenizer, self.max_document_chars), f"data.{split}", batched=True,
            remove_columns=docs.column_names,
            new_fingerprint=fingerprint(docs._fingerprint, tokenizer.backend_tokenizer.to_str(), "tokenize",
                                         self.max_document_chars, document_separator(tokenizer)),
            desc=f"Tokenizing ({split})", batch_size=TOKENIZE_BATCH,
        )
        writer = self._writer
        blocks, lengths, n_tokens = pack_column(tokens.data.column("input_ids"), self.block_size,
                                                out=writer.path(split) if writer is not None else None)
        if len(blocks) == 0:
            key = self.split_key(split)
            files = {"data.train": self.train_files, "data.val": self.val_files, "data.test": self.test_files}[key]
            raise ValueError(
                f"{key}: the {split} split of {files} has {n_tokens} tokens, fewer than one block of "
                f"data.block_size={self.block_size}. Add text or lower data.block_size."
            )
        if split == "train" and self.train_weights is not None:
            self.train_weights = block_weights(self.train_weights, lengths, self.block_size, len(blocks))
        counts = {"documents": len(docs), "tokens": n_tokens, "blocks": len(blocks), "block_size": self.block_size}
        if writer is not None:
            writer.add(split, counts)
        self._log_split(split, counts)
        return PackedBlocks(blocks)


class _Tokenize:
    """Batched tokenization (a class, not a closure, so ``datasets`` can pickle it); documents longer
    than ``max_chars`` go through `encode_long`. Each document ends with `document_separator` (the
    end-of-text token, for a tokenizer that does not frame documents itself)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_chars: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.max_chars = max_chars
        self.separator = document_separator(tokenizer)
        self.encoder = direct_encoder(tokenizer)

    def __call__(self, examples: pa.Table) -> pa.Table:
        """The batch's ``input_ids`` (``list<int32>``), from and to Arrow (``datasets`` in ``arrow`` format): encoded
        by the fast tokenizer directly when it can (`lmforge.core.data.token_arrays`), else through `lists`."""
        texts = examples.column("text").to_pylist()
        if self.encoder is not None and (self.max_chars is None or all(len(t) <= self.max_chars for t in texts)):
            ids = encode_arrow(self.encoder, texts, self.separator)
        else:
            ids = pa.array([np.asarray(row).tolist() for row in self.lists(texts)["input_ids"]], type=IDS)
        return pa.table({"input_ids": ids})

    def lists(self, texts: list[str]) -> dict[str, list]:
        """``input_ids`` of ``texts`` as one list (or array) of ids per text."""
        long = [i for i, t in enumerate(texts) if self.max_chars is not None and len(t) > self.max_chars]
        original = texts
        if long:
            texts = list(texts)
            for i in long:
                texts[i] = ""
        ids = self.tokenizer(texts, add_special_tokens=True, return_attention_mask=False, verbose=False)["input_ids"]
        for i in long:
            ids[i] = encode_long(self.tokenizer, original[i], self.max_chars)
        if self.separator:
            ids = [np.append(row, self.separator) if isinstance(row, np.ndarray) else [*row, *self.separator]
                   for row in ids]
        return {"input_ids": ids}


class _TokenizeTexts(_Tokenize):
    """`_Tokenize` for a list of texts (what `StreamingBlocks` calls)."""

    def __call__(self, texts: list[str]) -> dict[str, list]:
        return self.lists(texts)


