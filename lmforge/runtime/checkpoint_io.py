"""Checkpoint writes that never leave a half-written file, carry a digest, and say so when the disk is full.

Lightning's ``TorchCheckpointIO`` serialises the whole checkpoint into memory
and writes it through an fsspec transaction whose temporary file lives in the
system temp directory (``tempfile.mkstemp()``); the final move is an atomic
rename only when that directory is on the checkpoint's filesystem. Elsewhere
(``/tmp`` on a local disk, checkpoints on NFS) the move is a copy, and a disk
that fills during that copy truncates ``last.ckpt``: the one checkpoint a
resume needs.

`AtomicCheckpointIO` writes local checkpoints to a temporary file beside the
target (``.<name>.<host>-<pid>.<random>.partial``), flushes it to disk and
renames it over the target, so the target is either the old checkpoint or the
new one. While writing it computes the file's sha256 and keeps it beside the
checkpoint (``<name>.sha256``, `lmforge.core.checkpoint.DIGEST_SUFFIX`); the
digest file accepts the old and the new bytes while the rename happens, so no
interruption leaves a checkpoint that fails its own check. Every load through
it checks the digest (`lmforge.core.checkpoint.verify_checkpoint`).

A write that fails for lack of room (``ENOSPC``, ``EDQUOT``, ``EFBIG``; torch
reports these as ``RuntimeError: ... unexpected pos``, so the failed write
itself is watched) removes the temporary file and raises `CheckpointWriteError`,
which names the checkpoint and the room it needs, says that the earlier ones are
intact and how to resume. A process killed while writing leaves its temporary
file behind; the next process that writes into or resumes from that directory
removes it (`remove_stale_partials`). Remote paths (``s3://``, ...) are left to
Lightning. The CLI installs it on every trainer; with a plain ``Trainer`` pass
``plugins=[AtomicCheckpointIO()]``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from lmforge.core.checkpoint import digest_lines, digest_path, recorded_digests, torch_load, verify_checkpoint
from lmforge.runtime.run_paths import refuse_outside

log = logging.getLogger(__name__)

#: errno values that mean "no room": no space on the device, disk quota exceeded, file too large.
NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
#: A temporary file of an interrupted write whose writer cannot be identified (written by an older lmforge,
#: or on another host) counts as stale once it has not changed for this long.
STALE_AFTER_S = 3600.0
_TAGGED = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)\.[^.]+\.partial$")
_UNTAGGED = re.compile(r"^\..+\.[^.]+\.partial$")


class CheckpointWriteError(OSError):
    """A checkpoint could not be written for lack of space; the earlier checkpoints are intact."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that writes local files atomically with a digest beside them (temporary file beside
    the target, fsync, rename), checks the digest on load, and explains a full disk.

    Args:
        write_root: When set, refuse to write a checkpoint outside this directory (the CLI's run directory,
            `lmforge.runtime.run_paths`): the last guard, after the recipe's paths were checked.
    """

    def __init__(self, write_root: str | Path | None = None) -> None:
        super().__init__()
        self.write_root = Path(write_root) if write_root is not None else None
        self._cleaned: set[Path] = set()

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        if self.write_root is not None:
            refuse_outside(path, self.write_root, "checkpoint")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._clean_once(path.parent)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_writer_tag()}.", suffix=".partial")
        writer = _HashingWriter(None)
        try:
            with os.fdopen(fd, "wb") as f:
                writer.file = f
                torch.save(checkpoint, writer)
                f.flush()
                os.fsync(f.fileno())
            publish(Path(temporary), path, writer.hexdigest())
        except BaseException as exc:
            written = os.path.getsize(temporary) if os.path.exists(temporary) else writer.size
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            code = _no_room(exc, writer, written)
            if code is not None:
                raise CheckpointWriteError(code, _no_room_message(path, code, checkpoint, written)) from exc
            raise

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None) -> Any:
        if "://" in str(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        remove_stale_partials(path.parent)  # the run being resumed: what its killed writes left
        verify_checkpoint(path)
        if weights_only is False:  # a caller that asked for full unpickling (not lmforge's CLI) gets Lightning's
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        return torch_load(path, map_location=map_location or (lambda storage, loc: storage))

    def remove_checkpoint(self, path: Any) -> None:
        super().remove_checkpoint(path)
        if "://" not in str(path):
            with contextlib.suppress(FileNotFoundError):
                digest_path(path).unlink()

    def _clean_once(self, directory: Path) -> None:
        if directory not in self._cleaned:
            self._cleaned.add(directory)
            remove_stale_partials(directory)


def publish(temporary: Path, path: Path, digest: str) -> None:
    """Rename the written ``temporary`` over ``path`` with its digest beside it, so that at every moment the digest
    file accepts what ``path`` holds: first it accepts the old and the new bytes, then the rename, then the new only."""
    sidecar = digest_path(path)
    old = recorded_digests(path) or []
    _write_atomically(sidecar, digest_lines(path.name, [digest, *old]))
    os.replace(temporary, path)
    _write_atomically(sidecar, digest_lines(path.name, [digest]))
    _fsync_directory(path.parent)


def _write_atomically(path: Path, text: str) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_writer_tag()}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened or synced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _writer_tag() -> str:
    """``<host>-<pid>``: who writes a temporary file, so that a later process can tell whether its writer lives."""
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
    return f"{host}-{os.getpid()}"


def remove_stale_partials(directory: str | Path) -> list[Path]:
    """Remove the temporary files that killed checkpoint writes left in ``directory``; returns them.

    A temporary file is stale when its writer (host and pid in its name) was this host and is no longer running,
    or, when its writer cannot be identified (another host, an older lmforge), when it has not changed for
    `STALE_AFTER_S` seconds. A write in progress in another process is left alone.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    here = _writer_tag().rsplit("-", 1)[0]
    removed = []
    for path in directory.glob(".*.partial"):
        found = _TAGGED.match(path.name)
        if found is None and not _UNTAGGED.match(path.name):
            continue
        host, pid = (found.group("host"), found.group("pid")) if found else (None, None)
        if host == here and pid is not None:
            stale = int(pid) != os.getpid() and not _alive(int(pid))
        else:
            with contextlib.suppress(FileNotFoundError):
                stale = time.time() - path.stat().st_mtime > STALE_AFTER_S
        if stale:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    if removed:
        log.warning("Removed %d stale temporary checkpoint file(s) that interrupted writes left in %s: %s",
                    len(removed), directory, ", ".join(p.name for p in removed))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class _HashingWriter:
    """A file for ``torch.save`` that hashes and counts what goes through, and keeps the OS error of a failed
    write (torch reports it only as ``unexpected pos``)."""

    def __init__(self, file: Any) -> None:
        self.file = file
        self.size = 0
        self.error: OSError | None = None
        self._sha256 = hashlib.sha256()

    def write(self, data: Any) -> int:
        try:
            written = self.file.write(data)
        except OSError as exc:
            self.error = exc
            raise
        view = memoryview(data)
        self._sha256.update(view if written is None or written == view.nbytes else view[:written])
        self.size += view.nbytes if written is None else written
        return view.nbytes if written is None else written

    def flush(self) -> None:
        self.file.flush()

    def hexdigest(self) -> str:
        return self._sha256.hexdigest()


class _CountingSink:
    """A file that only counts bytes: the size a checkpoint needs, without writing it."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: Any) -> int:
        n = memoryview(data).nbytes
        self.size += n
        return n

    def flush(self) -> None:
        pass


def _no_room(exc: BaseException, writer: _HashingWriter, written: int) -> int | None:
    """The errno when ``exc`` means the checkpoint did not fit, else None."""
    for candidate in (exc, writer.error, exc.__cause__, exc.__context__):
        if isinstance(candidate, OSError) and candidate.errno in NO_ROOM:
            return candidate.errno
    if isinstance(exc, RuntimeError) and "unexpected pos" in str(exc):
        # torch's writer lost the errno of a short write; the two causes it can have are told apart here.
        limit = _file_size_limit()
        if limit is not None and written >= limit - (1 << 20):
            return errno.EFBIG
        return errno.ENOSPC
    return None


def _file_size_limit() -> int | None:
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else soft


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _no_room_message(path: Path, code: int, checkpoint: dict[str, Any], written: int) -> str:
    sink = _CountingSink()
    try:
        torch.save(checkpoint, sink)
        needed = f"it needs {_size(sink.size)}"
    except Exception:  # the size is a courtesy; never hide the real error behind another
        needed = "its size is unknown"
    free = shutil.disk_usage(path.parent).free if path.parent.exists() else None
    room = f"{_size(free)} free on that filesystem" if free is not None else "free space unknown"
    limit = _file_size_limit()
    if code == errno.EFBIG and limit is not None:
        room += f"; files are limited to {_size(limit)} (ulimit -f)"
    kept = sorted(p.name for p in path.parent.glob("*.ckpt"))
    intact = (f"the checkpoints already in {path.parent} ({', '.join(kept)}) are intact" if kept
              else f"no earlier checkpoint exists in {path.parent}")
    resume = f" Free space, then resume with --ckpt_path {path.parent / 'last.ckpt'}." if "last.ckpt" in kept else (
        " Free space and run again.")
    what = "no room" if code == errno.EFBIG else "disk full"
    return (f"{what} while writing checkpoint {path} ({os.strerror(code)}): {needed}, and the write stopped after "
            f"{_size(written)} ({room}). Nothing was overwritten and {intact}.{resume}")
