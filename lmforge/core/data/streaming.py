"""Streaming training data: local shards read lazily with HF ``datasets``, split over ranks and dataloader
workers, tokenized and packed on the fly. For corpora larger than memory or the tokenized-dataset cache.

Every (rank, worker) pair is one reader of ``world_size x num_workers``; ``split_dataset_by_node`` gives
each reader whole shards when their count divides evenly, and otherwise every N-th document, so no
document is read twice in an epoch. Packing concatenates each reader's documents as ``pack`` does; each
reader drops only its own last partial block.

Resuming mid-epoch: each reader's position (the HF stream's ``state_dict`` where its current tokenizer
batch starts, the tokens carried into that batch and the blocks already given from it) is its dataset
state; torchdata's ``StatefulDataLoader`` collects those states from the workers and restores them, and
Lightning saves and loads a stateful train loader's state with the fit loop. `StreamingLoader` adds the
two things neither does: one state per rank, and the state of the batches trained on (Lightning fetches a
batch ahead), and it ends the epoch on every rank when the first rank runs out of blocks.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info
from torchdata.stateful_dataloader import StatefulDataLoader

from lmforge.core.data.files import BUILDERS, DataFileError, reader_options

log = logging.getLogger(__name__)

#: Documents tokenized together (one fast-tokenizer call); a resumed reader re-tokenizes at most one batch.
TOKENIZE_BATCH = 256


class StreamingBlocks(IterableDataset):
    """Blocks of ``block_size`` tokens packed on the fly from streamed documents.

    Args:
        files: Local shards of one format (``txt``, ``jsonl``, ``csv``, ``parquet``).
        tokenizer: Turns a list of texts into ``{"input_ids": [[...], ...]}`` (a HF tokenizer).
        block_size: Tokens per example.
        text_column: Column holding the text in ``jsonl``/``csv``/``parquet`` shards.
        rank: This process's global rank.
        world_size: Number of processes.
        skip_bad_rows: Skip rows whose text is not a string or holds a NUL character (counted in the log at the
            end of each reader's pass) instead of stopping; ``data.skip_bad_lines``. A stream is checked as it
            is read, so its bad rows are not numbered.
    """

    def __init__(self, files: list[str | Path], tokenizer: Callable[[list[str]], Any], block_size: int,
                 text_column: str = "text", rank: int = 0, world_size: int = 1, skip_bad_rows: bool = False) -> None:
        super().__init__()
        builders = {BUILDERS.get(Path(f).suffix.lower()) for f in files}
        if len(builders) != 1 or None in builders:
            raise ValueError(
                f"StreamingBlocks: files must share one supported format ({sorted(BUILDERS)}), got "
                f"{sorted(str(f) for f in files)}. Stream one format per run."
            )
        self.builder = builders.pop()
        self.files = [str(f) for f in files]
        self.tokenizer, self.block_size, self.text_column = tokenizer, block_size, text_column
        self.rank, self.world_size = rank, world_size
        self.skip_bad_rows = skip_bad_rows
        #: Where this reader stands (see `blocks`); what ``state_dict`` returns.
        self.position: dict[str, Any] = {}
        self._resume: dict[str, Any] = {}

    def stream(self, reader: int, readers: int) -> Any:
        """Reader ``reader``'s part of the shards, as a HF ``IterableDataset`` (resumable by its ``state_dict``)."""
        import datasets
        from datasets.distributed import split_dataset_by_node

        stream = datasets.load_dataset(self.builder, data_files=self.files, split="train", streaming=True,
                                       **reader_options(self.builder, self.text_column))
        return split_dataset_by_node(stream, rank=reader, world_size=readers)

    def _text_batches(self, stream: Any, batch: int) -> Iterator[list[str]]:
        """The stream's non-empty texts, ``batch`` documents read at a time.

        ``IterableDataset.iter`` rather than ``iter(stream)``: inside a DataLoader worker the latter splits
        the shards over the workers once more, and this reader already is one worker's part.
        """
        column = "text" if self.builder == "text" else self.text_column
        skipped = 0
        for examples in stream.iter(batch_size=batch):
            texts = []
            for text in examples[column]:
                if isinstance(text, str) and "\0" not in text:
                    if text.strip():
                        texts.append(text)
                elif self.skip_bad_rows:
                    skipped += 1
                else:
                    what = "holds a NUL character (U+0000)" if isinstance(text, str) else f"is {type(text).__name__}"
                    raise DataFileError(
                        f"data.train: a row of {self.files} {what} in {column!r} (data.text_column), so it cannot be a "
                        "document. Fix it (lmforge without data.streaming names its line), or set "
                        "data.skip_bad_lines: true to skip such rows."
                    )
            yield texts
        if skipped:
            log.warning("data.train: skipped %d row(s) of %s that cannot be documents (text that is not a string or "
                        "holds a NUL character); data.skip_bad_lines is on.", skipped, self.files)

    def documents(self, reader: int, readers: int) -> Iterator[str]:
        """The documents of reader ``reader`` of ``readers`` (rank x worker), in stream order."""
        for texts in self._text_batches(self.stream(reader, readers), TOKENIZE_BATCH):
            yield from texts

    def blocks(self, reader: int, readers: int, batch: int = TOKENIZE_BATCH,
               start: dict[str, Any] | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """Reader ``reader``'s documents, tokenized ``batch`` at a time and packed into blocks.

        ``start`` is a ``position`` to continue from. A position names the stream state where the current
        tokenizer batch begins, the tokens carried into it from the batch before (fewer than a block) and
        how many blocks this batch has given; it stays small, so that it can be taken after every block.
        """
        stream = self.stream(reader, readers)
        pending: list[int] = []
        skip = 0
        batch_start = copy.deepcopy(stream.state_dict())
        if start:
            stream.load_state_dict(start["stream"])
            batch_start, pending, skip = start["stream"], list(start["carry"]), start["blocks"]
        for texts in self._text_batches(stream, batch):
            carry = list(pending)
            for ids in self.tokenizer(texts)["input_ids"] if texts else []:
                pending.extend(ids)
            n = len(pending) // self.block_size
            for i in range(skip, n):
                block = np.asarray(pending[i * self.block_size : (i + 1) * self.block_size], dtype=np.int64)
                self.position = {"stream": batch_start, "carry": carry, "blocks": i + 1}
                yield {"input_ids": torch.from_numpy(block)}
            skip = 0
            del pending[: n * self.block_size]
            batch_start = copy.deepcopy(stream.state_dict())

    def state_dict(self) -> dict[str, Any]:
        """This reader's position after the last block it gave (torchdata calls it in the worker)."""
        return copy.deepcopy(self.position)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the next iteration from ``state`` (a ``state_dict``; empty: from the start)."""
        self._resume = dict(state)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        start, self._resume, self.position = self._resume, {}, {}
        return self.blocks(self.rank * workers + worker, self.world_size * workers, start=start)


class StreamingLoader(StatefulDataLoader):
    """The train loader of a stream: torchdata's ``StatefulDataLoader`` with what distributed training needs.

    - The epoch ends on every rank as soon as one rank runs out of blocks (one boolean all-reduce per
      batch), so that DDP and FSDP ranks always take the same steps; a rank's remaining blocks are skipped.
    - ``state_dict`` holds every rank's position (Lightning writes the loop state of rank 0 only), taken at
      the batches trained on (Lightning has fetched one more by the time it saves).

    Args:
        dataset: The stream (`StreamingBlocks`).
        trainer: The Lightning trainer (its ranks, strategy and batch progress); None outside a trainer.
        kwargs: Passed to ``StatefulDataLoader``.
    """

    #: Snapshots kept behind the newest batch (Lightning prefetches one).
    KEEP = 8

    def __init__(self, dataset: StreamingBlocks, trainer: Any = None, **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.trainer = trainer
        self._snapshots: dict[int, dict[str, Any]] = {}
        self._resume = self._start()
        self._warned = False

    def _start(self) -> dict[str, Any]:
        return {"batches": 0, "loader": {}, "workers": self.num_workers}

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def __iter__(self) -> Iterator[Any]:
        return self._batches(super().__iter__(), self._resume)

    def _batches(self, iterator: Any, start: dict[str, Any]) -> Iterator[Any]:
        count = start["batches"]
        self._resume = self._start()
        self._snapshots = {count: start}
        rank, world = self._world()
        while True:
            try:
                batch, more = next(iterator), True
            except StopIteration:
                batch, more = None, False
            if world > 1:
                every = self.trainer.strategy.reduce_boolean_decision(more, all=True)
                if more and not every and not self._warned:
                    warnings.warn(f"StreamingLoader: rank {rank} still had blocks when another rank ran out; the "
                                  "epoch ends on every rank together, so the rest are skipped this epoch. Shards "
                                  "of similar size (or more shards than ranks x workers) keep the loss small.",
                                  stacklevel=2)
                    self._warned = True
                more = every
            if not more:
                return
            count += 1
            self._snapshots[count] = {"batches": count, "loader": copy.deepcopy(iterator.state_dict()),
                                      "workers": self.num_workers}
            self._snapshots.pop(count - self.KEEP, None)
            yield batch

    def _trained(self) -> int | None:
        """Batches of this epoch the trainer has trained on (None outside a fit)."""
        trainer = self.trainer
        if trainer is None or trainer.state.fn != "fit":
            return None
        return trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def state_dict(self) -> dict[str, Any]:
        """``{"ranks": [state of rank 0, rank 1, ...]}``; every rank must call it (it gathers)."""
        trained = self._trained()
        if not self._snapshots:
            state = self._resume
        elif trained in self._snapshots:
            state = self._snapshots[trained]
        else:
            raise RuntimeError(
                f"StreamingLoader: no position saved for batch {trained} of this epoch (have "
                f"{sorted(self._snapshots)}); the trainer consumed batches in an unexpected way."
            )
        rank, world = self._world()
        if world == 1:
            return {"ranks": [state]}
        import torch.distributed as dist

        states: list[Any] = [None] * world
        dist.all_gather_object(states, state)
        return {"ranks": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        rank, world = self._world()
        states = state_dict.get("ranks", [])
        if len(states) != world:
            raise ValueError(
                f"data.streaming: the checkpoint holds the stream positions of {len(states)} rank(s) but this run "
                f"has {world}. Resume a streaming run with the same number of processes (trainer.devices x "
                "trainer.num_nodes) and data.num_workers."
            )
        if states[rank]["workers"] != self.num_workers:
            raise ValueError(
                f"data.num_workers: the checkpoint's stream was read by {states[rank]['workers']} worker(s) per rank, "
                f"this run has {self.num_workers}. Resume a streaming run with the same data.num_workers."
            )
        self._resume = states[rank]
        super().load_state_dict(self._resume["loader"])
