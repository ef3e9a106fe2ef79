"""Read what an offline W&B run recorded, from its ``run-<id>.wandb`` file.

wandb ships no reader for this file (``wandb sync`` uploads it). The format is
LevelDB's log format with a 7-byte file header: ``:W&B``, the magic 0xBEE1
(little endian) and a version byte; then 32 KiB blocks of records, each with a
7-byte header (CRC-32 of type byte + payload, 2-byte length, 1-byte type:
FULL, FIRST, MIDDLE or LAST). Each assembled record is a protobuf
``wandb.proto.wandb_internal_pb2.Record``. Call ``wandb.finish()`` before
reading; the service may still be writing the file for a moment after
``finish()`` returns, so `read_run` waits for the run's ``exit`` record.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = b":W&B" + struct.pack("<H", 0xBEE1) + b"\x00"
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: str | Path) -> list[Any]:
    """Every record of a ``.wandb`` file, decoded, in order."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if not data.startswith(HEADER):
        raise ValueError(f"{path}: not a W&B run file (header {data[:7]!r})")
    records, parts, pos = [], [], len(HEADER)
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:  # zero padding to the end of the block
            pos += left
            continue
        payload = data[pos + 7:pos + 7 + length]
        if zlib.crc32(payload, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            raise ValueError(f"{path}: bad checksum at byte {pos}")
        pos += 7 + length
        parts.append(payload)
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            records.append(record)
            parts = []
    return records


@dataclass
class OfflineRun:
    """The run as W&B would show it: id, name, tags, config, history rows and summary."""

    run_id: str = ""
    name: str = ""
    project: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    directory: Path | None = None

    def series(self, key: str, step_key: str = "trainer/global_step") -> list[tuple[int, float]]:
        """``(step, value)`` for every history row holding ``key``."""
        return [(row.get(step_key), row[key]) for row in self.history if key in row]


def _key(item: Any) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def read_complete_records(path: Path, timeout: float = 30.0) -> list[Any]:
    """The records of a finished run, waiting up to ``timeout`` seconds for its ``exit`` record."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            records = read_records(path)
        except ValueError:  # a record still being written
            records = []
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path}: no exit record after {timeout} s; was wandb.finish() called?")
        time.sleep(0.1)


def read_run(run_dir: str | Path) -> OfflineRun:
    """Decode ``run_dir/run-<id>.wandb`` (``run_dir`` is a ``wandb/offline-run-*`` directory)."""
    run_dir = Path(run_dir)
    (path,) = run_dir.glob("run-*.wandb")
    run = OfflineRun(directory=run_dir)
    for record in read_complete_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id, run.name, run.project, run.tags = r.run_id, r.display_name, r.project, list(r.tags)
            for item in r.config.update:
                run.config[_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run.config[_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            run.history.append({_key(item): json.loads(item.value_json) for item in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[_key(item)] = json.loads(item.value_json)
    return run


def offline_runs(wandb_dir: str | Path) -> list[Path]:
    """The ``offline-run-*`` directories under ``wandb_dir`` (a save_dir or its ``wandb/``), oldest first."""
    root = Path(wandb_dir)
    if (root / "wandb").is_dir():
        root = root / "wandb"
    return sorted(root.glob("offline-run-*"))
