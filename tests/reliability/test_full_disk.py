"""No room for a checkpoint: a clear error naming the file and the room it needs, the earlier checkpoints intact.

Real faults only. A file-size limit (``ulimit -f``, ``RLIMIT_FSIZE`` set in the child process) makes the
kernel refuse the write with EFBIG; a small tmpfs (mounted when the tests run as root and may mount) fills up
and refuses it with ENOSPC. torch reports both as ``RuntimeError: ... unexpected pos``; the checkpoint writer
must still say what happened. A read-only filesystem (or directory) gives another write error, which is
raised as it is.
"""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from reliability_kit import digests, tiny_project

from lmforge.core.checkpoint import file_digest, recorded_digests
from lmforge.runtime.checkpoint_io import AtomicCheckpointIO, CheckpointWriteError

LMFORGE = [str(Path(sys.executable).parent / "lmforge")]


def cli(root: Path, *args: str, limit_bytes: int | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``lmforge ARGS`` in ``root``, in a process of its own, with a file-size limit when given."""

    def limit() -> None:
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, resource.RLIM_INFINITY))

    env = {**os.environ, "LMFORGE_CACHE": str(root / "cache"), "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([*LMFORGE, *args], cwd=root, env=env, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limit)


def partials(root: Path) -> list[Path]:
    return sorted(root.rglob("*.partial"))


def test_a_file_size_limit_while_checkpointing_names_the_file_and_the_room(tmp_path: Path) -> None:
    """``ulimit -f``: the run stops with CheckpointWriteError (not SIGXFSZ), and the earlier run is untouched."""
    tiny_project(tmp_path)
    first = cli(tmp_path, "fit", "--config", "tiny.yaml")
    assert first.returncode == 0, first.stderr[-3000:]
    run0 = tmp_path / "runs" / "tiny" / "version_0"
    last = run0 / "checkpoints" / "last.ckpt"
    size = last.stat().st_size
    before = digests(run0)

    # Resume under a limit of a third of a checkpoint: the run reads and logs, but no checkpoint fits.
    resumed = cli(tmp_path, "fit", "--config", "tiny.yaml", "--ckpt_path", str(last), "--trainer.max_steps", "6",
                  limit_bytes=size // 3)
    assert resumed.returncode > 0, (resumed.returncode, resumed.stderr[-3000:])  # an error, not killed by SIGXFSZ
    err = resumed.stderr
    target = Path("runs") / "tiny" / "version_1" / "checkpoints"
    assert err.count("lmforge: error: ") == 1 and f"no room while writing checkpoint {target}/" in err
    assert "File too large" in err and "(ulimit -f)" in err
    needed = float(err.split("it needs ")[1].split(" KB")[0]) * 1000
    assert 0.9 * size < needed < 1.2 * size  # the room it needs: about one checkpoint
    assert "Nothing was overwritten" in err
    assert digests(run0) == before  # the run it resumed from: every file as it was
    assert recorded_digests(last) == [file_digest(last)]
    assert partials(tmp_path) == [] and not list((tmp_path / target).glob("*.ckpt"))


def can_mount_tmpfs(where: Path) -> str | None:
    """None when a tmpfs can be mounted at ``where`` (then unmounted), else why not."""
    if os.geteuid() != 0:
        return "needs root to mount a small tmpfs"
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        return f"mount is not permitted here: {done.stderr.strip()}"
    subprocess.run(["umount", str(where)], check=True)
    return None


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1.2 MB tmpfs at tmp_path/disk, unmounted afterwards."""
    disk = tmp_path / "disk"
    reason = can_mount_tmpfs(disk)
    if reason:
        pytest.skip(reason)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


FILL_SCRIPT = textwrap.dedent("""
    import sys, json
    from pathlib import Path
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint
    sys.path.insert(0, sys.argv[3])
    from tiny import write_corpus
    from lmforge.core.backbone import Backbone
    from lmforge.core.data.text import TextData
    from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining
    from lmforge.core.module import LanguageModel
    from lmforge.plugins.objectives.causal_lm import CausalLM
    from lmforge.runtime.checkpoint_io import AtomicCheckpointIO, CheckpointWriteError

    root, disk = Path(sys.argv[1]), Path(sys.argv[2])
    write_corpus(root / "train.txt", 120, seed=1)
    data = TextData(train=str(root / "train.txt"), val=str(root / "train.txt"), block_size=32, batch_size=4,
                    tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=300)), cache_dir=str(root / "cache"),
                    seed=0)
    # Every step keeps a checkpoint of its own beside last.ckpt: the disk fills after a few.
    checkpoints = ModelCheckpoint(dirpath=disk, every_n_train_steps=1, save_last=True, save_top_k=-1,
                                  filename="{step}")
    trainer = Trainer(max_steps=20, accelerator="cpu", logger=False, callbacks=[checkpoints],
                      plugins=[AtomicCheckpointIO()], limit_val_batches=0, num_sanity_val_steps=0,
                      enable_progress_bar=False, enable_model_summary=False)
    backbone = Backbone(architecture="gpt2", config={"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64})
    try:
        trainer.fit(LanguageModel(backbone, CausalLM()), datamodule=data)
    except CheckpointWriteError as exc:
        print(json.dumps({"errno": exc.errno, "message": str(exc), "step": trainer.global_step}))
""")


def test_a_full_disk_while_checkpointing_keeps_every_earlier_checkpoint(tmp_path: Path, small_disk: Path) -> None:
    script = tmp_path / "fill.py"
    script.write_text(FILL_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(tmp_path), str(small_disk), str(Path(__file__).parent.parent)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["errno"] == errno.ENOSPC
    message = result["message"]
    assert f"disk full while writing checkpoint {small_disk}" in message and "No space left on device" in message
    assert "it needs " in message and "free on that filesystem" in message
    assert "Nothing was overwritten" in message and "are intact" in message
    assert partials(small_disk) == []
    kept = sorted(small_disk.glob("*.ckpt"))
    assert len(kept) >= 2 and small_disk / "last.ckpt" in kept
    for path in kept:  # every checkpoint on the full disk is whole: its digest matches and it loads
        assert recorded_digests(path) == [file_digest(path)], path
        assert "state_dict" in AtomicCheckpointIO().load_checkpoint(path)
    last = torch.load(small_disk / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] < result["step"] + 1


def test_other_write_errors_are_raised_unchanged_and_leave_nothing(tmp_path: Path) -> None:
    """A read-only filesystem (root: a read-only tmpfs) or directory (others: mode 555) refuses the write."""
    target = tmp_path / "ro"
    if os.geteuid() == 0:
        reason = can_mount_tmpfs(target)
        if reason:
            pytest.skip(f"root ignores directory modes, and {reason}")
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(target)], check=True)
    else:
        target.mkdir()
        target.chmod(0o555)
    try:
        with pytest.raises(OSError) as excinfo:
            AtomicCheckpointIO().save_checkpoint({"x": torch.zeros(3)}, target / "a.ckpt")
        assert not isinstance(excinfo.value, CheckpointWriteError)
        assert excinfo.value.errno in (errno.EROFS, errno.EACCES)
        assert list(target.iterdir()) == []
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(target)], check=False)
        else:
            target.chmod(0o755)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX rename semantics")
def test_the_cli_writes_checkpoints_atomically_and_refuses_outside_paths(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from lmforge.cli.recipes import bundled_recipes
    from lmforge.cli.training import run_cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lmforge"])
    cli_ = run_cli(["--config", str(bundled_recipes()["quickstart"])], run=False)
    checkpoint_io = cli_.trainer.strategy.checkpoint_io
    assert isinstance(checkpoint_io, AtomicCheckpointIO) and checkpoint_io.write_root == tmp_path
    with pytest.raises(ValueError, match="outside the run directory"):
        checkpoint_io.save_checkpoint({"x": 1}, tmp_path.parent / "elsewhere.ckpt")
    assert not (tmp_path.parent / "elsewhere.ckpt").exists()
