"""Streaming training data: local shards read lazily with HF ``datasets``, split over ranks and dataloader
workers, tokenized and packed on the fly. For corpora larger than memory or the tokenized-dataset cache.

Every (rank, worker) pair is one reader of ``world_size x num_workers``; ``split_dataset_by_node`` gives
each reader whole shards when their count divides evenly, and otherwise every N-th document, so no
document is read twice in an epoch. Packing concatenates each reader's documents as ``pack`` does; each
reader drops only its own last partial block.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from lmforge.core.files import BUILDERS


class StreamingBlocks(IterableDataset):
    """Blocks of ``block_size`` tokens packed on the fly from streamed documents.

    Args:
        files: Local shards of one format (``txt``, ``jsonl``, ``csv``, ``parquet``).
        tokenizer: Turns a list of texts into ``input_ids`` (a HF tokenizer).
        block_size: Tokens per example.
        text_column: Column holding the text in ``jsonl``/``csv``/``parquet`` shards.
        rank: This process's global rank.
        world_size: Number of processes.
    """

    def __init__(self, files: list[str | Path], tokenizer: Any, block_size: int, text_column: str = "text",
                 rank: int = 0, world_size: int = 1) -> None:
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

    def documents(self, reader: int, readers: int) -> Iterator[str]:
        """The documents of reader ``reader`` of ``readers`` (rank x worker), in stream order."""
        import datasets
        from datasets.distributed import split_dataset_by_node

        stream = datasets.load_dataset(self.builder, data_files=self.files, split="train", streaming=True)
        stream = split_dataset_by_node(stream, rank=reader, world_size=readers)
        column = "text" if self.builder == "text" else self.text_column
        for example in stream:
            text = example[column]
            if text and text.strip():
                yield text

    def blocks(self, reader: int, readers: int, batch: int = 256) -> Iterator[dict[str, torch.Tensor]]:
        """Reader ``reader``'s documents, tokenized ``batch`` at a time and packed into blocks."""
        pending: list[int] = []
        texts: list[str] = []

        def flush() -> Iterator[dict[str, torch.Tensor]]:
            for ids in self.tokenizer(texts)["input_ids"]:
                pending.extend(ids)
            texts.clear()
            n = len(pending) // self.block_size
            for i in range(n):
                block = np.asarray(pending[i * self.block_size : (i + 1) * self.block_size], dtype=np.int64)
                yield {"input_ids": torch.from_numpy(block)}
            del pending[: n * self.block_size]

        for text in self.documents(reader, readers):
            texts.append(text)
            if len(texts) == batch:
                yield from flush()
        yield from flush()

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.blocks(self.rank * workers + worker, self.world_size * workers)
