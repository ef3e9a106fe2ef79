"""Real signals and a file changed under a running process.

- SIGKILL while a checkpoint is written: the previous checkpoint stays whole, and the temporary file the killed
  writer left is removed by the next process that resumes from (or writes into) that directory; a temporary
  file of a writer that still runs, and those of other runs, are left alone.
- SIGTERM during ``lmforge fit``: ``last.ckpt`` is written whole, with its digest, and the run resumes from it.
- A data file appended to while a run reads it: the run stops naming it, and what it read is not cached.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from reliability_kit import digests, tiny_project
from tiny import write_corpus

from lmforge.core.checkpoint import file_digest, recorded_digests
from lmforge.core.data.files import DataFileError
from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining
from lmforge.runtime.checkpoint_io import AtomicCheckpointIO

LMFORGE = str(Path(sys.executable).parent / "lmforge")

WRITER = textwrap.dedent("""
    import sys, torch
    from lmforge.runtime.checkpoint_io import AtomicCheckpointIO
    # ~400 MB: long enough to be caught in the middle of the write.
    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(100_000_000)}, sys.argv[1])
""")


def kill_while_writing(target: Path, tmp_path: Path) -> Path:
    """Start a process that writes a large checkpoint to ``target``; SIGKILL it once its temporary file grows.
    Returns the temporary file it left."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    writer = subprocess.Popen([sys.executable, str(script), str(target)])
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            found = [p for p in target.parent.glob(f".{target.name}.*.partial") if p.stat().st_size > 1 << 20]
            if found:
                writer.send_signal(signal.SIGKILL)
                writer.wait(30)
                assert writer.returncode == -signal.SIGKILL
                return found[0]
            assert writer.poll() is None, "the writer finished before it could be killed"
            time.sleep(0.005)
    finally:
        if writer.poll() is None:
            writer.kill()
    raise AssertionError("the writer never started its temporary file")


def test_sigkill_during_a_checkpoint_write_keeps_the_old_one_and_the_next_start_cleans_up(tmp_path: Path) -> None:
    run, other_run = tmp_path / "run" / "checkpoints", tmp_path / "other" / "checkpoints"
    run.mkdir(parents=True)
    other_run.mkdir(parents=True)
    io_ = AtomicCheckpointIO()
    io_.save_checkpoint({"state_dict": {"w": torch.arange(4.0)}, "global_step": 7}, run / "last.ckpt")
    before = digests(run)

    left = kill_while_writing(run / "last.ckpt", tmp_path)
    assert left.is_file() and digests(run / "last.ckpt") == {k: v for k, v in before.items() if k.endswith(".ckpt")}
    assert recorded_digests(run / "last.ckpt") == [file_digest(run / "last.ckpt")]  # digest file still matches
    # A write in progress (a live process) and another run's killed write must survive the clean-up.
    sleeper = subprocess.Popen(["sleep", "60"])
    host = socket.gethostname()
    live = run / f".last.ckpt.{host}-{sleeper.pid}.abcd.partial"
    live.write_bytes(b"in progress")
    elsewhere = kill_while_writing(other_run / "last.ckpt", tmp_path)
    try:
        # The next start of this run: resuming loads its last checkpoint (what `fit --ckpt_path` does).
        checkpoint = AtomicCheckpointIO().load_checkpoint(run / "last.ckpt")
        assert checkpoint["global_step"] == 7 and torch.equal(checkpoint["state_dict"]["w"], torch.arange(4.0))
        assert not left.exists() and live.exists() and elsewhere.exists()
        # A new process writing into the other run's directory cleans that one at its first write.
        AtomicCheckpointIO().save_checkpoint({"x": torch.zeros(1)}, other_run / "step=1.ckpt")
        assert not elsewhere.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_sigterm_during_fit_saves_a_whole_checkpoint_that_resumes(tmp_path: Path) -> None:
    tiny_project(tmp_path)
    env = {**os.environ, "LMFORGE_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    # Long enough to be signalled while training; the first checkpoint (step 2) says it has started.
    fit = subprocess.Popen([LMFORGE, "fit", "--config", "tiny.yaml", "--trainer.max_steps", "100000"], cwd=tmp_path,
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    checkpoints = tmp_path / "runs" / "tiny" / "version_0" / "checkpoints"
    deadline = time.monotonic() + 240
    while not (checkpoints / "last.ckpt.sha256").exists():
        assert fit.poll() is None and time.monotonic() < deadline, "the run never wrote its first checkpoint"
        time.sleep(0.2)
    time.sleep(1.0)
    fit.send_signal(signal.SIGTERM)
    _, err = fit.communicate(timeout=120)  # its exit status is the CLI's signal handling, tested with the CLI
    assert "SIGTERM at step" in err and "saved" in err
    last = checkpoints / "last.ckpt"
    assert recorded_digests(last) == [file_digest(last)] and not list(checkpoints.glob(".*.partial"))
    step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert step > 2  # the state at the signal, not the earlier periodic checkpoint
    target = (step // 2 + 2) * 2  # the recipe checkpoints every 2 steps
    resumed = subprocess.run([LMFORGE, "fit", "--config", "tiny.yaml", "--ckpt_path", str(last),
                              "--trainer.max_steps", str(target)], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = torch.load(tmp_path / "runs" / "tiny" / "version_1" / "checkpoints" / "last.ckpt", map_location="cpu",
                       weights_only=True)
    assert after["global_step"] == target


def test_a_data_file_written_while_it_is_read_is_not_trusted(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "train.txt", 3000, seed=1)
    stop = threading.Event()

    def append() -> None:  # another program still writing the corpus
        with corpus.open("a", encoding="utf-8") as f:
            while not stop.is_set():
                f.write("one more line of text arrives while lmforge reads.\n")
                f.flush()
                time.sleep(0.001)

    writer = threading.Thread(target=append)
    writer.start()
    try:
        data = TextData(train=str(corpus), val=str(corpus), block_size=16, batch_size=2, seed=0,
                        tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=300)),
                        cache_dir=str(tmp_path / "cache"))
        with pytest.raises(DataFileError) as excinfo:
            data.prepare_data()
    finally:
        stop.set()
        writer.join()
    message = str(excinfo.value)
    assert message.startswith("data.train: ") and str(corpus) in message and "changed while lmforge read" in message
    datasets_cache = tmp_path / "cache" / "datasets"  # no entry read from the changing file is kept
    assert [p.name for p in datasets_cache.iterdir() if not p.name.startswith(".")] in ([], ["checked"])
    assert not list((datasets_cache / "checked").glob("*"))
    # Once nothing writes to it, the same file is read (and cached) normally.
    data.prepare_data()
    assert len(data.datasets["train"]) > 0
