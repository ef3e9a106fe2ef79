"""Checkpoint writes that never leave a half-written file, and say so when the disk is full.

Lightning's ``TorchCheckpointIO`` serialises the whole checkpoint into memory
and writes it through an fsspec transaction whose temporary file lives in the
system temp directory (``tempfile.mkstemp()``); the final move is an atomic
rename only when that directory is on the checkpoint's filesystem. Elsewhere
(``/tmp`` on a local disk, checkpoints on NFS) the move is a copy, and a disk
that fills during that copy truncates ``last.ckpt``: the one checkpoint a
resume needs.

`AtomicCheckpointIO` writes local checkpoints to a temporary file beside the
target, flushes it to disk and renames it over the target, so the target is
either the old checkpoint or the new one. A write that fails for lack of space
removes the temporary file and raises `CheckpointWriteError`, which names the
checkpoint, says that the earlier ones are intact and how to resume. Remote
paths (``s3://``, ...) are left to Lightning. The CLI installs it on every
trainer; with a plain ``Trainer`` pass ``plugins=[AtomicCheckpointIO()]``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

#: errno values that mean "no room": no space on the device, disk quota exceeded, file too large.
NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class CheckpointWriteError(OSError):
    """A checkpoint could not be written for lack of space; the earlier checkpoints are intact."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that writes local files atomically (temporary file beside the target, fsync,
    rename) and explains a full disk."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, path)
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            if isinstance(exc, OSError) and exc.errno in NO_ROOM:
                raise CheckpointWriteError(exc.errno, _no_room_message(path, exc)) from exc
            raise


def _no_room_message(path: Path, exc: OSError) -> str:
    kept = sorted(p.name for p in path.parent.glob("*.ckpt"))
    intact = (f"the checkpoints already in {path.parent} ({', '.join(kept)}) are intact" if kept
              else f"no earlier checkpoint exists in {path.parent}")
    resume = f" Free space, then resume with --ckpt_path {path.parent / 'last.ckpt'}." if "last.ckpt" in kept else (
        " Free space and run again.")
    return (f"disk full while writing checkpoint {path} ({os.strerror(exc.errno)}): nothing was overwritten and "
            f"{intact}.{resume}")

