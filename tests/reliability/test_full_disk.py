"""A disk that fills while a checkpoint is written: a clear error, and the previous checkpoints intact.

The disk is filled by a ``torch.save`` that writes half of the checkpoint and then raises ``ENOSPC``, as a
real ``write`` does when the device is full.
"""

from __future__ import annotations

import errno
import io
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from reliability_kit import digests
from tiny import write_corpus
from tiny import TINY_GPT2

from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining
from lmforge.core.module import LanguageModel
from lmforge.plugins.objectives.causal_lm import CausalLM
from lmforge.runtime.checkpoint_io import AtomicCheckpointIO, CheckpointWriteError


class DiskFillsAt:
    """``torch.save`` that, from its ``nth`` call on, writes half the bytes and then fails with ENOSPC."""

    def __init__(self, nth: int) -> None:
        self.nth, self.calls, self.real = nth, 0, torch.save

    def __call__(self, obj, f, *args, **kwargs) -> None:
        self.calls += 1
        if self.calls < self.nth:
            return self.real(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        self.real(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")


def run(tmp_path: Path, steps: int, checkpoint_io=None, ckpt_path: Path | None = None) -> Trainer:
    tmp_path.mkdir(parents=True, exist_ok=True)
    write_corpus(tmp_path / "train.txt", 120, seed=1)
    data = TextData(train=str(tmp_path / "train.txt"), val=str(tmp_path / "train.txt"), block_size=32, batch_size=4,
                    tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=300)),
                    cache_dir=str(tmp_path / "cache"), seed=0)
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "checkpoints", every_n_train_steps=1, save_last=True,
                                  save_top_k=1, monitor="step", mode="max", filename="{step}")
    trainer = Trainer(max_steps=steps, accelerator="cpu", logger=False, callbacks=[checkpoints],
                      plugins=[checkpoint_io or AtomicCheckpointIO()], limit_val_batches=0, num_sanity_val_steps=0,
                      enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(LanguageModel(TINY_GPT2, CausalLM()), datamodule=data, ckpt_path=ckpt_path)
    return trainer


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoints = tmp_path / "checkpoints"
    # Two writes per step (step=N.ckpt, then last.ckpt): the 6th write is last.ckpt of step 3.
    monkeypatch.setattr(torch, "save", DiskFillsAt(nth=6))
    with pytest.raises(CheckpointWriteError) as excinfo:
        run(tmp_path, steps=5)
    monkeypatch.undo()

    error = excinfo.value
    assert error.errno == errno.ENOSPC
    message = str(error)
    assert f"disk full while writing checkpoint {checkpoints / 'last.ckpt'}" in message
    assert "nothing was overwritten" in message and "(last.ckpt, step=3.ckpt) are intact" in message
    assert f"resume with --ckpt_path {checkpoints / 'last.ckpt'}" in message
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt", "step=3.ckpt"]  # no partial file left

    last = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 2  # the previous last.ckpt, whole
    before = digests(checkpoints / "last.ckpt")
    resumed = run(tmp_path / "resume", steps=4, ckpt_path=checkpoints / "last.ckpt")
    assert resumed.global_step == 4
    assert digests(checkpoints / "last.ckpt") == before


def test_other_write_errors_are_raised_unchanged_and_leave_no_partial_file(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(obj, f, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(torch, "save", denied)
    io_ = AtomicCheckpointIO()
    with pytest.raises(PermissionError):
        io_.save_checkpoint({"x": 1}, tmp_path / "a.ckpt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX rename semantics")
def test_the_cli_writes_checkpoints_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lmforge.cli.training import run_cli
    from lmforge.cli.recipes import bundled_recipes

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lmforge"])
    cli = run_cli(["--config", str(bundled_recipes()["quickstart"])], run=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
