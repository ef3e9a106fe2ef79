"""One small observed run, shared by the observability and plot tests (the ``observed_run`` fixture, registered
in tests/conftest.py): a CLI ``fit`` of a tiny recipe with the W&B overlay (offline) and the CSV logger, then
a ``fit --ckpt_path`` that resumes it."""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from lmforge.cli.main import main

STEPS, RESUMED_STEPS, BATCH, BLOCK = 6, 8, 4, 32
RECIPE = f"""\
# A tiny observed run: 1-layer GPT-2, two loss terms, validation every 3 steps.
seed_everything: 1
model:
  backbone: {{architecture: gpt2, config: {{n_layer: 1, n_embd: 32, n_head: 2, n_positions: 64}}}}
  objective: CausalLM
  regularizers:
    - class_path: observe_plugins.WeightPenalty
      init_args: {{weight: 1.0e-3}}
data:
  class_path: lmforge.core.data.TextData
  init_args:
    train: train.txt
    val: val.txt
    tokenizer: {{train: {{vocab_size: 300}}}}
    block_size: {BLOCK}
    batch_size: {BATCH}
optimizer:
  class_path: torch.optim.AdamW
  init_args: {{lr: 1.0e-3}}
lr_scheduler:
  class_path: lmforge.core.schedules.WarmupCosineLR
  init_args: {{warmup_steps: 2}}
trainer:
  max_steps: {STEPS}
  val_check_interval: 3
  check_val_every_n_epoch: null
  limit_val_batches: 2
  num_sanity_val_steps: 0
  log_every_n_steps: 2
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{save_last: true}}
    - class_path: lightning.pytorch.callbacks.LearningRateMonitor
      init_args: {{logging_interval: step}}
    - class_path: lmforge.runtime.observe.TokenThroughput
      init_args: {{window_size: 2}}
    - class_path: lmforge.runtime.observe.ValidationSamples
      init_args: {{max_new_tokens: 4}}
"""
WORDS = "the cat sat on a mat and dog ran to park while birds sang in tall green trees she read book".split()


@dataclass
class ObservedRun:
    root: Path
    runs: list[Path]  # runs/tiny/version_0 (fit), version_1 (resumed)
    wandb_dir: Path
    batch: int = BATCH
    block: int = BLOCK

    def csv_series(self, run: int, key: str) -> list[tuple[int, float]]:
        """``(step, value)`` of ``key`` in a run's metrics.csv, read with the csv module."""
        with open(self.runs[run] / "metrics.csv", newline="") as f:
            return [(int(r["step"]), float(r[key])) for r in csv.DictReader(f) if r.get(key)]


@pytest.fixture(scope="session")
def observed_run(tmp_path_factory: pytest.TempPathFactory) -> ObservedRun:
    root = tmp_path_factory.mktemp("observed")
    rng = random.Random(0)
    for name, n_docs in (("train.txt", 200), ("val.txt", 30)):
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30))) + "." for _ in range(n_docs)]
        (root / name).write_text("\n".join(lines) + "\n")
    (root / "tiny.yaml").write_text(RECIPE)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        mp.setattr("sys.argv", ["lmforge"])
        args = ["fit", "--config", "tiny.yaml", "--config", "overlays/wandb"]
        assert main(args) == 0
        last = root / "runs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
        assert main([*args, "--trainer.max_steps", str(RESUMED_STEPS), "--ckpt_path", str(last)]) == 0
    return ObservedRun(root, [root / "runs" / "tiny" / f"version_{i}" for i in (0, 1)], root / "runs" / "wandb")
