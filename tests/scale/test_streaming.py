"""Streaming: over 2 ranks x 2 dataloader workers every document is read exactly once per epoch, and each
reader's blocks are the ``pack`` of its documents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.core.data import pack
from lmforge.core.streaming import StreamingBlocks


class CharTokenizer:
    """One id per character: enough to check packing against ``pack``."""

    def __call__(self, texts: list[str]) -> dict[str, list[list[int]]]:
        return {"input_ids": [[ord(c) for c in t] for t in texts]}


def write_shards(root: Path, n_shards: int, docs_per_shard: int) -> list[Path]:
    paths = []
    for s in range(n_shards):
        path = root / f"shard-{s}.jsonl"
        lines = [json.dumps({"text": f"doc {s}-{i} " + "x" * (i % 7)}) for i in range(docs_per_shard)]
        path.write_text("\n".join(lines) + "\n")
        paths.append(path)
    return paths


@pytest.mark.parametrize("n_shards", [4, 3])  # whole shards per reader, and every 4th document of 3 shards
def test_each_document_once_over_two_ranks_and_two_workers(tmp_path: Path, n_shards: int) -> None:
    files = write_shards(tmp_path, n_shards, 10)
    expected = sorted(json.loads(line)["text"] for f in files for line in f.read_text().splitlines())
    seen = []
    for rank in range(2):
        data = StreamingBlocks(files, CharTokenizer(), block_size=8, rank=rank, world_size=2)
        for worker in range(2):
            seen += list(data.documents(rank * 2 + worker, 4))  # what __iter__ reads in worker `worker`
    assert sorted(seen) == expected


def test_blocks_are_the_pack_of_the_readers_documents(tmp_path: Path) -> None:
    files = write_shards(tmp_path, 2, 9)
    data = StreamingBlocks(files, CharTokenizer(), block_size=8, rank=1, world_size=2)
    docs = list(data.documents(1, 2))
    expected, _, _ = pack(CharTokenizer()(docs)["input_ids"], 8)
    blocks = [b["input_ids"].tolist() for b in data.blocks(1, 2, batch=4)]  # packing crosses tokenizer batches
    assert blocks == expected.tolist()
    assert [b["input_ids"].tolist() for b in data] == blocks  # outside a worker: rank 1 is reader 1 of 2
