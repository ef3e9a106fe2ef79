"""A store of a frozen teacher's top-k logits, keyed by the content of each row, for distilling over a fixed dataset.

A distiller that scores the same rows every epoch runs the same teacher on them every epoch. `TopKCache` keeps,
per row, the teacher's k largest logits at every position and their token ids, so that a row seen before (this
run or an earlier one) needs no teacher pass::

    cache = TopKCache.for_teacher(root, teacher, top_k, dtype)
    keys = row_keys(inputs)                      # one per row: a hash of its model inputs
    found = cache.lookup(keys)                   # {"values": ..., "indices": ...} per row, or None where missing

A row is keyed by its model inputs' bytes (``input_ids``, ``attention_mask``...), so no dataset index is
needed: a row that an augmenter or dynamic masking changed is simply a miss. A row's entry is a few named
tensors (``values`` and ``indices``, (..., k), and whatever else the distiller keeps per position). The entries
live under a directory named by `teacher_fingerprint` (the teacher's weights, the precision it runs in, k and
the distiller's settings that change what is stored), one file per batch of
new rows (``shard-<hash>.pt``), written under a temporary name and renamed, so a killed or concurrent writer
never leaves a partial file that a reader trusts. Ranks of a distributed run write their own rows and read each
other's; a file that cannot be read is removed with a warning and its rows computed again.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch
from torch import Tensor

log = logging.getLogger(__name__)

#: The layout of a shard file; one of another layout is not read (its directory differs, see `teacher_fingerprint`).
FORMAT = 1
#: Bytes of a row's key (blake2b digest).
KEY_BYTES = 16


def row_keys(inputs: dict[str, Tensor]) -> list[bytes]:
    """One key per row of the (B, ...) model inputs: a hash of each input's name, dtype, shape and bytes."""
    host = {name: tensor.detach().cpu().contiguous() for name, tensor in sorted(inputs.items())}
    keys = []
    for b in range(next(iter(host.values())).shape[0]):
        digest = hashlib.blake2b(digest_size=KEY_BYTES)
        for name, tensor in host.items():
            row = tensor[b]
            digest.update(f"{name}:{row.dtype}:{tuple(row.shape)}".encode())
            digest.update(row.reshape(-1).view(torch.uint8).numpy().tobytes())
        keys.append(digest.digest())
    return keys


def teacher_fingerprint(model: torch.nn.Module, top_k: int, dtype: torch.dtype, settings: str = "") -> str:
    """A key for a teacher's cached outputs: its class, weights (every tensor of its state dict), the dtype it
    runs in, k and ``settings`` (what else changes the stored tensors, e.g. a temperature). Hashing reads every
    weight once (about a second per GB)."""
    digest = hashlib.sha256(f"{FORMAT}:{type(model).__name__}:{top_k}:{dtype}:{settings}".encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


class TopKCache:
    """The top-k logits of one teacher (one `teacher_fingerprint`), in memory and in ``directory``.

    Attributes:
        directory: Where the shard files are.
        top_k: k, the logits kept per position.
    """

    def __init__(self, directory: Path, top_k: int) -> None:
        self.directory, self.top_k = Path(directory), top_k
        self._rows: dict[bytes, dict[str, Tensor]] = {}  # key -> values (..., k), indices (..., k), ...
        self._read: set[str] = set()  # the shard files read or written
        self._seen_mtime: int | None = None
        self._write_failed = False

    @classmethod
    def for_teacher(cls, root: Path, model: torch.nn.Module, top_k: int, dtype: torch.dtype,
                    settings: str = "") -> TopKCache:
        """The cache of ``model`` under ``root`` (in ``root/<teacher_fingerprint>``), with what is stored read."""
        cache = cls(Path(root) / teacher_fingerprint(model, top_k, dtype, settings), top_k)
        cache.refresh()
        return cache

    def __len__(self) -> int:
        return len(self._rows)

    def lookup(self, keys: list[bytes]) -> list[dict[str, Tensor] | None]:
        """The stored tensors of each row by name, None for a row not stored; files that other ranks or runs
        wrote since the last look are read first when a row is missing."""
        found = [self._rows.get(key) for key in keys]
        if any(f is None for f in found) and self.refresh():
            found = [self._rows.get(key) for key in keys]
        return found

    def add(self, keys: list[bytes], **columns: Tensor) -> None:
        """Store rows: ``values`` and ``indices`` (len(keys), ..., k) and any other ``columns`` (len(keys), ...),
        one row per key; kept in memory and written to one shard file. A failed write (a full disk) is said once;
        the rows stay in memory."""
        columns = {name: tensor.detach().cpu() for name, tensor in columns.items()}
        for i, key in enumerate(keys):
            self._rows[key] = {name: tensor[i] for name, tensor in columns.items()}
        name = f"shard-{hashlib.blake2b(b''.join(keys), digest_size=KEY_BYTES).hexdigest()}.pt"
        self._read.add(name)
        path = self.directory / name
        temporary = path.with_name(f".{name}.{os.getpid()}.tmp")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            unchanged = self._mtime() == self._seen_mtime  # nobody else wrote since the last look
            keys_tensor = torch.frombuffer(bytearray(b"".join(keys)), dtype=torch.uint8).reshape(len(keys), KEY_BYTES)
            torch.save({"format": FORMAT, "keys": keys_tensor, "columns": columns}, temporary)
            os.replace(temporary, path)
            if unchanged:  # our own file need not send the next miss to the directory listing
                self._seen_mtime = self._mtime()
        except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as RuntimeError
            temporary.unlink(missing_ok=True)
            if not self._write_failed:
                log.warning("Could not write the teacher's top-k cache %s (%s); keeping its rows in memory only.",
                            path, exc)
            self._write_failed = True

    def refresh(self) -> bool:
        """Read the shard files not read yet, when the directory changed since the last look; whether it had."""
        mtime = self._mtime()
        if mtime is None or mtime == self._seen_mtime:
            return False
        self._seen_mtime = mtime
        for path in sorted(self.directory.glob("shard-*.pt")):
            if path.name not in self._read:
                self._read.add(path.name)
                self._read_shard(path)
        return True

    def _mtime(self) -> int | None:
        try:
            return os.stat(self.directory).st_mtime_ns
        except FileNotFoundError:
            return None

    def _read_shard(self, path: Path) -> None:
        try:
            shard = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            keys, columns = shard["keys"], shard["columns"]
            values, indices = columns["values"], columns["indices"]
            n = keys.shape[0]
            if (shard["format"] != FORMAT or keys.dtype != torch.uint8 or tuple(keys.shape) != (n, KEY_BYTES)
                    or values.shape != indices.shape or values.shape[-1] != self.top_k
                    or indices.dtype not in (torch.int16, torch.int32, torch.int64)
                    or any(tensor.shape[:1] != (n,) for tensor in columns.values())):
                raise ValueError(f"unexpected contents: keys {tuple(keys.shape)}, "
                                 + ", ".join(f"{k} {tuple(v.shape)}" for k, v in columns.items()))
        except Exception as exc:  # a truncated zip raises whatever torch's reader raises
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.warning("The teacher's top-k cache file %s is damaged (%s: %s); removing it, its rows are computed "
                        "again.", path, type(exc).__name__, reason)
            path.unlink(missing_ok=True)
            return
        for i, key in enumerate(keys.numpy()):
            self._rows[key.tobytes()] = {name: tensor[i] for name, tensor in columns.items()}
