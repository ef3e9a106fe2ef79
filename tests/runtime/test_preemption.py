"""A real SIGTERM to a real ``lmforge fit``: it saves last.ckpt and exits 143 (the requeue code), and
``lmforge fit --ckpt_path last`` continues that run in its own directory, its steps and its metrics.csv."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

LMFORGE = str(Path(sys.executable).parent / "lmforge")
WORDS = "the cat sat on a mat and the dog ran to the park while birds sang in tall green trees".split()
#: Trains "forever" (until the SIGTERM), with a last.ckpt every 2 steps and a short validation every 7.
RECIPE = """\
seed_everything: 1
model:
  backbone: {architecture: gpt2, config: {n_layer: 1, n_embd: 16, n_head: 2, n_positions: 32}}
  objective: CausalLM
data:
  class_path: lmforge.core.data.TextData
  init_args: {train: train.txt, val: val.txt, tokenizer: {train: {vocab_size: 300}}, block_size: 16, batch_size: 4}
trainer:
  max_steps: 100000
  val_check_interval: 7
  check_val_every_n_epoch: null
  limit_val_batches: 1
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
  logger: {class_path: lightning.pytorch.loggers.CSVLogger, init_args: {save_dir: runs, name: tiny}}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {save_last: true, every_n_train_steps: 2}
"""
REQUEUE = 143


def write_project(root: Path) -> None:
    rng = random.Random(0)
    for name, n in (("train.txt", 200), ("val.txt", 30)):
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30))) + "." for _ in range(n)]
        (root / name).write_text("\n".join(lines) + "\n")
    (root / "tiny.yaml").write_text(RECIPE)


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def preempted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess, int]:
    """The run, sent SIGTERM once it has saved a checkpoint; its working directory, result and last step."""
    root = tmp_path_factory.mktemp("preempted")
    write_project(root)
    last = root / "runs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen([LMFORGE, "fit", "--config", "tiny.yaml"], cwd=root, env=env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    step = int(torch.load(last, weights_only=True)["global_step"])
    return root, subprocess.CompletedProcess(proc.args, proc.returncode, out, err), step


@pytest.mark.slow
def test_sigterm_saves_last_checkpoint_and_exits_with_the_requeue_code(preempted) -> None:
    _, result, step = preempted
    assert result.returncode == REQUEUE, result.stderr[-3000:]
    assert step >= 2 and "SIGTERM" in result.stderr


@pytest.mark.slow
def test_fit_ckpt_path_last_continues_the_same_run(preempted) -> None:
    root, _, stopped_at = preempted
    run_dir = root / "runs" / "tiny" / "version_0"
    # An even end, so that the recipe's every-2-steps last.ckpt is written at it (the SIGTERM may come at any step).
    target = 2 * ((stopped_at + 5) // 2)
    resumed = subprocess.run([LMFORGE, "fit", "--config", "tiny.yaml", "--trainer.max_steps", str(target),
                              "--ckpt_path", "last"], cwd=root, env=env(), text=True, capture_output=True,
                             timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # It says which checkpoint it resumes, before anything else of the run.
    first = [line for line in resumed.stderr.splitlines() if line.startswith("lmforge:")][0]
    assert f"resuming runs/tiny/version_0/checkpoints/last.ckpt at step {stopped_at}" in first
    assert sorted(p.name for p in (root / "runs" / "tiny").iterdir()) == ["version_0"]
    assert int(torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]) == target
    with open(run_dir / "metrics.csv", newline="") as f:
        steps = [int(float(row["step"])) for row in csv.DictReader(f) if row.get("loss/total")]
    # One row per trained batch (log_every_n_steps: 1), before and after the SIGTERM, none twice.
    assert len(steps) == target and steps == sorted(set(steps)), steps
    assert steps[stopped_at - 1] < stopped_at <= steps[stopped_at], steps
