"""TextData: raw text files -> data-stage plugins -> tokens -> packed blocks.

`BaseTextData` holds what every lmforge DataModule shares (the seed, the
cache, the tokenizer, the data-stage plugin hooks); `TextData` here and
`lmforge.core.labeled_data.LabeledTextData` differ only in how they read,
lay out and batch their rows.

Files are read with HF ``datasets`` (``txt``: one document per non-empty
line; ``jsonl``/``csv``/``parquet``: one document per row, from
``text_column``), so tokenization is batched and cached on disk. Packing
follows HF ``run_clm.py``'s ``group_texts`` except that it concatenates the
whole split, so only the split's last partial block is dropped rather than
one per map batch.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lmforge.core.files import documents_dataset, resolve_files
from lmforge.core.plugin_checks import hook_guard
from lmforge.core.plugins import Augmenter, Plugin, overrides
from lmforge.core.run_paths import default_cache_dir
from lmforge.core.tokenizer import (
    TokenizerSpec,
    TokenizerTraining,
    batched_text,
    encode_long,
    load_tokenizer,
    tokenizer_from_json,
    train_tokenizer,
    training_cache_key,
)

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

    from lmforge.core.streaming import StreamingLoader

log = logging.getLogger(__name__)


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


class ResumableSampler(DistributedSampler):
    """Training order: a seeded shuffle (or weighted draw) per epoch, split over ranks, resumable mid-epoch.

    Epoch ``e``'s order depends only on ``seed`` and ``e`` (Lightning calls ``set_epoch``), so a resumed run
    draws the same order; ``skip_batches`` drops the batches a checkpoint had already trained on. Written
    here because torch's samplers cannot start mid-epoch (torchdata's StatefulDataLoader would add a
    dependency); a ``DistributedSampler`` subclass so that Lightning does not wrap it under DDP.

    Args:
        size: Examples in the dataset.
        batch_size: Examples per batch on each rank (what ``skip_batches`` counts in).
        seed: Seed of the order.
        rank: This process's global rank.
        world_size: Number of processes; each takes every ``world_size``-th example of the order, and the
            order is cut to a multiple of ``world_size`` so that every rank runs the same number of batches.
        weights: Per-example sampling weights (drawn with replacement), or None for a permutation.
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 weights: torch.Tensor | None = None) -> None:
        # DistributedSampler.__init__ wants a dataset and a process group; only its public fields are kept.
        self.size, self.batch_size, self.seed, self.weights = size, batch_size, seed, weights
        self.rank, self.num_replicas = rank, world_size
        self.num_samples = size // world_size
        self.total_size = self.num_samples * world_size
        self.epoch = 0
        self.skip_batches = 0

    def order(self, epoch: int) -> list[int]:
        """This rank's examples in epoch ``epoch``, from the start."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        if self.weights is None:
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.multinomial(self.weights, self.size, replacement=True, generator=generator)
        return order[: self.total_size][self.rank :: self.num_replicas].tolist()

    def __iter__(self) -> Iterator[int]:
        skip, self.skip_batches = self.skip_batches * self.batch_size, 0
        order = self.order(self.epoch)
        return iter(order[skip:] if skip < len(order) else order)  # a checkpoint at the epoch's end: a new epoch

    def __len__(self) -> int:
        return self.num_samples


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


def data_plugins(module: Any) -> list[Plugin]:
    """The module's data-stage plugins, in pipeline order (bias mitigators, then augmenters)."""
    if module is None or not hasattr(module, "data_plugins"):
        return []
    return list(module.data_plugins())


class BaseTextData(LightningDataModule):
    """What lmforge's DataModules share: seed, cache, tokenizer and the data-stage plugins.

    Subclasses read their splits and lay them out; ``process_text`` and
    ``sample_weights`` of the model's plugins run here, on whatever columns
    the subclass's rows have. The recipe's ``data.class_path`` must name a
    subclass.
    """

    def __init__(self, tokenizer: TokenizerSpec | None, batch_size: int, num_workers: int, cache_dir: str | None,
                 seed: int | None) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be at least 1, got {batch_size}.")
        self.tokenizer_spec = tokenizer or TokenizerSpec(train=TokenizerTraining())
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self._seed = seed
        self.tokenizer: PreTrainedTokenizerBase | None = None
        #: A checkpoint whose tokenizer to use instead of training one (set by the CLI from --ckpt_path).
        self.checkpoint_path: str | None = None
        #: Documents longer than this are tokenized in pieces (`TextData`'s setting; None: whole).
        self.max_document_chars: int | None = None
        self.skip_bad_lines = False
        self.train_weights: torch.Tensor | None = None
        self._resume_batches = 0

    @property
    def seed(self) -> int:
        if self._seed is not None:
            return self._seed
        return int(os.environ.get("PL_GLOBAL_SEED", 0))

    # -- Lightning hooks -------------------------------------------------------------------------

    def prepare_data(self) -> None:
        # Rank 0 fills the caches (trained tokenizer, tokenized splits); `setup` on every rank reads them.
        with self._progress_bars():
            self._build()

    def setup(self, stage: str | None = None) -> None:
        with self._progress_bars():
            self._build()
        run_dir = self._run_dir(stage)
        if run_dir is not None:
            self.save_with_run(run_dir)

    def _run_dir(self, stage: str | None) -> Path | None:
        """The run directory on the rank that writes it (global zero, fitting, with a logger)."""
        trainer = self.trainer
        if stage == "fit" and trainer is not None and trainer.logger is not None and trainer.is_global_zero:
            return Path(trainer.log_dir)
        return None

    def save_with_run(self, run_dir: Path) -> None:
        """Write what the run keeps besides its checkpoints (the tokenizer)."""
        self.tokenizer.save_pretrained(str(run_dir / "tokenizer"))

    def state_dict(self) -> dict[str, Any]:
        """The position in the current epoch (batches this rank has trained on), saved in checkpoints."""
        trainer = self.trainer
        if trainer is None or trainer.state.fn != "fit":
            return {}
        return {"epoch_batches": trainer.fit_loop.epoch_loop.batch_progress.current.processed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._resume_batches = int(state_dict.get("epoch_batches", 0))

    def _build(self) -> None:
        raise NotImplementedError

    def _loader(self, data: Dataset, collate_fn: Any, **kwargs: Any) -> DataLoader:
        return DataLoader(
            data, batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=collate_fn,
            pin_memory=torch.cuda.is_available(), persistent_workers=self.num_workers > 0,
            # The loader's own generator seeds its workers, so starting an epoch draws nothing from the global
            # generator (that dropout uses): a resumed run's dropout masks match the uninterrupted run's.
            generator=torch.Generator().manual_seed(self.seed), **kwargs,
        )

    def _train_loader(self, data: Dataset, collate_fn: Any) -> DataLoader:
        """Shuffled by the data seed, or drawn by the plugins' sample weights; resumable mid-epoch."""
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        sampler = ResumableSampler(len(data), self.batch_size, self.seed, rank, world, weights=self.train_weights)
        if self._resume_batches:  # a mid-epoch checkpoint: continue after the batches it had trained on
            sampler.skip_batches = self._resume_batches
            self._resume_batches = 0
        return self._loader(data, collate_fn, sampler=sampler, drop_last=True)

    # -- shared building blocks ------------------------------------------------------------------

    def _objective(self) -> Any:
        module = self.trainer.lightning_module if self.trainer is not None else None
        return getattr(module, "objective", None)

    def _plugins(self) -> list[Plugin]:
        return data_plugins(self.trainer.lightning_module if self.trainer is not None else None)

    def _progress_bars(self) -> contextlib.AbstractContextManager[None]:
        # `--trainer.enable_progress_bar false` silences the tokenization and preparation bars too.
        quiet = self.trainer is not None and getattr(self.trainer, "progress_bar_callback", True) is None
        return _datasets_progress_bars(enabled=not quiet)

    def data_files(self) -> dict[str, list[Path]]:
        """The files each split reads, globs expanded: ``{"data.train": [...], "data.val": [...]}``.

        The run's record (`lmforge.core.observe.RunConfig`) fingerprints them. Subclasses set
        ``train_files`` and ``val_files``.
        """
        files = {"data.train": resolve_files(self.train_files, "data.train")}
        if self.val_files is not None:
            files["data.val"] = resolve_files(self.val_files, "data.val")
        return files

    def _given_tokenizer(self) -> PreTrainedTokenizerBase | None:
        """The tokenizer that needs no training: ``tokenizer.path``'s, or the checkpoint's when validating,
        testing or resuming; None when one must be trained."""
        if self.tokenizer_spec.path is not None:
            return load_tokenizer(self.tokenizer_spec.path)
        if self.checkpoint_path and Path(self.checkpoint_path).is_file():
            from lmforge.core.export import load_checkpoint
            from lmforge.core.module import CKPT_KEY

            saved = load_checkpoint(self.checkpoint_path, mmap=True)[CKPT_KEY]
            return tokenizer_from_json(saved["tokenizer"], saved["tokenizer_config"])
        return None

    def _get_tokenizer(self, train: datasets.Dataset, texts: Iterable[str] | None = None) -> PreTrainedTokenizerBase:
        """Load ``tokenizer.path`` or train one on ``texts`` (default: the ``text`` column of ``train``)."""
        given = self._given_tokenizer()
        if given is not None:
            return given
        spec = self.tokenizer_spec
        training = spec.train or TokenizerTraining()
        objective = self._objective()
        algorithm = training.algorithm or getattr(objective, "tokenizer_algorithm", "bpe")
        data_key = f"{train._fingerprint}:{self.max_document_chars}"
        directory = self.cache_dir / "tokenizers" / training_cache_key(training, algorithm, data_key)
        if (directory / "tokenizer.json").exists():
            return load_tokenizer(directory)
        log.info("Training a %s tokenizer (vocab_size=%d) on %d documents", algorithm, training.vocab_size, len(train))
        texts = batched_text(train["text"] if texts is None else texts, max_chars=self.max_document_chars)
        tokenizer = train_tokenizer(texts, training, algorithm)
        tokenizer.save_pretrained(str(directory))
        return tokenizer

    def _apply_text_plugins(self, docs: datasets.Dataset, split: str, plugins: list[Plugin]) -> datasets.Dataset:
        for position, plugin in enumerate(plugins):
            if not overrides(plugin, "process_text"):
                continue
            splits = ("train",) if isinstance(plugin, Augmenter) else plugin.splits
            if split not in splits:
                continue
            with hook_guard(plugin, "process_text"):
                docs = docs.map(
                    _TextStage(plugin, self.seed, position), batched=True, with_indices=True,
                    new_fingerprint=_fingerprint(docs._fingerprint, plugin, self.seed, position),
                    desc=f"{type(plugin).__name__} ({split})",
                )
            if len(docs) == 0:
                raise ValueError(f"{type(plugin).__name__} left no {split} documents; check its settings.")
        return docs

    def _sample_weights(self, docs: datasets.Dataset, plugins: list[Plugin]) -> torch.Tensor | None:
        weights = None
        for plugin in plugins:
            if not overrides(plugin, "sample_weights"):
                continue
            with hook_guard(plugin, "sample_weights"):
                w = plugin.sample_weights(docs)
            if w is None:
                continue
            w = torch.as_tensor(w, dtype=torch.double)
            if w.shape != (len(docs),) or bool((w < 0).any()) or not bool(torch.isfinite(w).all()):
                raise ValueError(
                    f"{type(plugin).__name__}.sample_weights must return {len(docs)} finite, non-negative "
                    f"weights, got shape {tuple(w.shape)}."
                )
            weights = w if weights is None else weights * w
        return weights


class TextData(BaseTextData):
    """Raw text for language modelling: packed blocks of ``block_size`` tokens.

    Args:
        train: Training files: paths or globs (``txt``, ``jsonl``, ``csv``,
            ``parquet``). ``lmforge:corpus/train.txt`` names a file bundled
            with lmforge.
        val: Validation files; when None, ``val_fraction`` of the training
            documents are held out.
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
            the fly (`lmforge.core.streaming`), instead of tokenizing them
            into the cache first: for corpora larger than memory or disk
            cache. Needs ``val``; the validation split is built as without
            streaming. Resuming with ``--ckpt_path`` continues the epoch where
            it stopped (see docs/scaling.md).
        streaming_tokenizer_documents: With ``streaming`` and a tokenizer to
            train (no ``tokenizer.path``), train it on the first this many
            training documents, in file order.
    """

    def __init__(
        self,
        train: str | list[str],
        val: str | list[str] | None = None,
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
        super().__init__(tokenizer, batch_size, num_workers, cache_dir, seed)
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must be between 0 and 1, got {val_fraction}.")
        self.train_files = [train] if isinstance(train, str) else list(train)
        self.val_files = [val] if isinstance(val, str) else (list(val) if val is not None else None)
        self.val_fraction = val_fraction
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

    # -- Lightning hooks -------------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        if self.streaming:
            return self._stream_loader()
        return self._train_loader(self.datasets["train"], _collate_batch)

    def _stream_loader(self) -> StreamingLoader:
        """Blocks read, tokenized and packed on the fly; each (rank, worker) reads its own part of the files."""
        from lmforge.core.streaming import StreamingBlocks, StreamingLoader  # torchdata only for streaming runs

        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        blocks = StreamingBlocks(resolve_files(self.train_files, "data.train"),
                                 _TokenizeTexts(self.tokenizer, self.max_document_chars), self.block_size,
                                 self.text_column, rank, world)
        # A batch may hold fewer blocks at the end of a worker's stream: no block is dropped. Workers are not
        # persistent: each epoch starts them anew, so a position restored for one epoch cannot leak into the next.
        return StreamingLoader(blocks, trainer, batch_size=self.batch_size, num_workers=self.num_workers,
                               pin_memory=torch.cuda.is_available(), generator=torch.Generator().manual_seed(self.seed))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["val"], _collate_batch, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    # -- building --------------------------------------------------------------------------------

    def _build(self) -> None:
        if self.datasets:
            return
        module = self.trainer.lightning_module if self.trainer is not None else None
        if hasattr(module, "check_data"):
            module.check_data(self)  # settings the model cannot take fail before any file is read
        if self.streaming:
            self._build_streaming()
            return
        raw = self._load_splits()
        self.tokenizer = self._get_tokenizer(raw["train"])
        plugins = self._plugins()
        for split in ("train", "val"):
            docs = self._apply_text_plugins(raw[split], split, plugins)
            if split == "train":
                self.train_weights = self._sample_weights(docs, plugins)
            self.datasets[split] = self._layout(docs, split)

    def _build_streaming(self) -> None:
        """The tokenizer and the validation split; the training split is read while training (`_stream_loader`)."""
        plugins = self._plugins()
        unsupported = [f"{type(p).__name__}.{hook}" for p in plugins for hook in ("process_text", "sample_weights")
                       if overrides(p, hook) and (hook == "sample_weights" or isinstance(p, Augmenter)
                                                  or "train" in p.splits)]
        if unsupported:
            raise ValueError(
                f"data.streaming: the training split is not run through data-stage plugin hooks yet, and this "
                f"recipe has {', '.join(unsupported)}. Set data.streaming to false, or remove those plugins."
            )
        given = self._given_tokenizer()  # only a tokenizer to train needs the sample read
        self.tokenizer = given if given is not None else self._get_tokenizer(
            self._tokenizer_sample(resolve_files(self.train_files, "data.train")))
        val = self._read(self.val_files, "data.val")
        self.datasets["val"] = self._layout(self._apply_text_plugins(val, "val", plugins), "val")

    def _tokenizer_sample(self, files: list[Path]) -> datasets.Dataset:
        """The first ``streaming_tokenizer_documents`` training documents, which a tokenizer to train is trained
        on (read only when one is: not with ``tokenizer.path`` or a checkpoint's tokenizer)."""
        import datasets

        from lmforge.core.streaming import StreamingBlocks

        stream = StreamingBlocks(files, None, self.block_size, self.text_column).documents(0, 1)
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

    def _load_splits(self) -> dict[str, datasets.Dataset]:
        train = self._read(self.train_files, "data.train")
        if self.val_files is not None:
            return {"train": train, "val": self._read(self.val_files, "data.val")}
        if len(train) < 2:
            raise ValueError(
                f"data.train: {len(train)} document(s) cannot be split into train and validation; "
                "add documents or give data.val."
            )
        parts = train.train_test_split(test_size=self.val_fraction, seed=self.seed, shuffle=True)
        return {"train": parts["train"], "val": parts["test"]}

    def _layout(self, docs: datasets.Dataset, split: str) -> PackedBlocks:
        tokenizer = self.tokenizer
        tokens = docs.map(
            _Tokenize(tokenizer, self.max_document_chars), batched=True, remove_columns=docs.column_names,
            new_fingerprint=_fingerprint(docs._fingerprint, tokenizer.backend_tokenizer.to_str(), "tokenize",
                                         self.max_document_chars),
            desc=f"Tokenizing ({split})",
        )
        column = tokens.data.column("input_ids")
        lengths = np.asarray(column.combine_chunks().value_lengths(), dtype=np.int64) if len(tokens) else np.zeros(0)
        flat = np.asarray(column.combine_chunks().flatten(), dtype=np.int64) if len(tokens) else np.zeros(0)
        blocks, _, dropped = pack_flat(flat, lengths, self.block_size)
        if len(blocks) == 0:
            key = "data.train" if split == "train" or self.val_files is None else "data.val"
            files = self.train_files if key == "data.train" else self.val_files
            raise ValueError(
                f"{key}: the {split} split of {files} has {len(flat)} tokens, fewer than one block of "
                f"data.block_size={self.block_size}. Add text or lower data.block_size."
            )
        if split == "train" and self.train_weights is not None:
            self.train_weights = block_weights(self.train_weights, lengths, self.block_size, len(blocks))
        log.info("%s: %d documents, %d tokens, %d blocks of %d (%d tokens dropped at the end)",
                 split, len(docs), len(flat), len(blocks), self.block_size, dropped)
        return PackedBlocks(blocks)


class _Tokenize:
    """Batched tokenization (a class, not a closure, so ``datasets`` can pickle it); documents longer
    than ``max_chars`` go through `encode_long`."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_chars: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.max_chars = max_chars

    def __call__(self, examples: dict[str, list]) -> dict[str, list]:
        texts = examples["text"]
        long = [i for i, t in enumerate(texts) if self.max_chars is not None and len(t) > self.max_chars]
        if long:
            texts = list(texts)
            for i in long:
                texts[i] = ""
        ids = self.tokenizer(texts, add_special_tokens=True, return_attention_mask=False, verbose=False)["input_ids"]
        for i in long:
            ids[i] = encode_long(self.tokenizer, examples["text"][i], self.max_chars)
        return {"input_ids": ids}


class _TokenizeTexts(_Tokenize):
    """`_Tokenize` for a list of texts (what `StreamingBlocks` calls)."""

    def __call__(self, texts: list[str]) -> dict[str, list]:
        return super().__call__({"text": texts})


class _TextStage:
    """Runs one plugin's ``process_text`` on a map batch with a batch-seeded ``random.Random``."""

    def __init__(self, plugin: Plugin, seed: int, position: int) -> None:
        self.plugin, self.seed, self.position = plugin, seed, position

    def __call__(self, examples: dict[str, list], indices: list[int]) -> dict[str, list]:
        first = indices[0] if indices else 0
        rng = random.Random(f"{self.seed}:{self.position}:{type(self.plugin).__name__}:{first}")
        try:
            out = self.plugin.process_text(examples, rng)
        except KeyError as exc:  # a text plugin on data without its column (token-level data has no "text")
            if exc.args and exc.args[0] not in examples:
                raise ValueError(
                    f"{type(self.plugin).__name__}.process_text needs a {exc.args[0]!r} column; this data has "
                    f"{sorted(examples)}. Remove the plugin from the recipe or use data it applies to."
                ) from None
            raise
        lengths = {k: len(v) for k, v in out.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"{type(self.plugin).__name__}.process_text returned columns of unequal length: {lengths}")
        return out


@contextlib.contextmanager
def _datasets_progress_bars(enabled: bool) -> Iterator[None]:
    """Turn ``datasets``' progress bars off inside the block when ``enabled`` is False (a global switch)."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    if not enabled:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled and not enabled:
            datasets.enable_progress_bars()


def _fingerprint(*parts: Any) -> str:
    payload = "|".join(p.data_fingerprint() if isinstance(p, Plugin) else str(p) for p in parts)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]
