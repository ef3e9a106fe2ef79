"""A process killed (SIGKILL) while writing last.ckpt leaves the previous last.ckpt whole.

Lightning serialises to memory, writes a temporary file and renames it over the checkpoint (fsspec
transaction); the kill below lands halfway through the temporary file's bytes.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

SCRIPT = textwrap.dedent('''
    import builtins, os, signal, sys
    import torch
    from lightning.pytorch import Trainer
    from lightning.pytorch.demos.boring_classes import BoringModel
    import fsspec.implementations.local as local

    path = sys.argv[1]
    trainer = Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(BoringModel())
    trainer.save_checkpoint(path)  # the good checkpoint, step 1

    class DiesMidWrite:
        """A file that writes half of what it is given, flushes it to disk, and is killed."""
        def __init__(self, f):
            self.f = f
        def write(self, data):
            self.f.write(data[: len(data) // 2]); self.f.flush(); os.fsync(self.f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        def __getattr__(self, name):
            return getattr(self.f, name)

    local.open = lambda *a, **k: DiesMidWrite(builtins.open(*a, **k))  # fsspec's local files open through this
    trainer.fit_loop.epoch_loop._batches_that_stepped = 99
    trainer.save_checkpoint(path)
''')


def test_kill_during_checkpoint_write_keeps_the_previous_last_ckpt(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    # The temporary file is renamed over last.ckpt: atomic only on one filesystem, hence TMPDIR beside it.
    env = {"TMPDIR": str(tmp_path), "PATH": "", "HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(path)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    checkpoint = torch.load(path, weights_only=False)  # loads: not truncated
    assert checkpoint["global_step"] == 1
    assert checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"] == 1
    assert [p.name for p in tmp_path.glob("*.ckpt*")] == ["last.ckpt"]  # the half-written bytes went to a temp file
