"""What the reliability tests share: a tiny recipe, running the CLI, and proof that nothing was lost."""

from __future__ import annotations

import hashlib
from pathlib import Path

# Imported at collection, so that Lightning's log handler writes to pytest's session stream rather than to a
# test's capsys stream, closed after that test ("--- Logging error ---" in later tests' stderr).
import lightning.pytorch  # noqa: F401

from lmforge.cli.main import main
from tiny import write_corpus

#: Planted in the environment of the ``tiny_run`` fixture; neither may reach any file the run writes.
SECRET_KEY = "secret-xyz-0123456789abcdef0123456789abcdef"
CANARY = "canary-value-7f3a9c"

#: A 1-layer GPT-2 on train.txt/val.txt in the working directory; checkpoints every 2 steps.
TINY_RECIPE = """\
# A tiny run for the reliability tests.
seed_everything: 3
model:
  backbone: {architecture: gpt2, config: {n_layer: 1, n_embd: 32, n_head: 2, n_positions: 64}}
  objective: CausalLM
data:
  class_path: lmforge.core.data.TextData
  init_args:
    train: train.txt
    val: val.txt
    tokenizer: {train: {vocab_size: 300}}
    block_size: 32
    batch_size: 4
optimizer:
  class_path: torch.optim.AdamW
  init_args: {lr: 1.0e-3}
lr_scheduler:
  class_path: lmforge.core.schedules.WarmupCosineLR
  init_args: {warmup_steps: 1}
trainer:
  max_steps: 4
  val_check_interval: 2
  check_val_every_n_epoch: null
  limit_val_batches: 2
  num_sanity_val_steps: 0
  gradient_clip_val: 1.0
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {save_dir: runs, name: tiny}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {save_last: true, every_n_train_steps: 2, save_top_k: -1}
"""


def tiny_project(root: Path) -> Path:
    """``tiny.yaml``, ``train.txt`` and ``val.txt`` in ``root``; returns the recipe."""
    write_corpus(root / "train.txt", 200, seed=1)
    write_corpus(root / "val.txt", 30, seed=2)
    recipe = root / "tiny.yaml"
    recipe.write_text(TINY_RECIPE)
    return recipe


def lmforge(*args: str) -> int:
    """Run the ``lmforge`` command; its exit status (a parse error's SystemExit included)."""
    try:
        return main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)


def digests(*paths: Path) -> dict[str, str]:
    """sha256 of every file under ``paths``: compare before and after to show nothing changed."""
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*"))) if f.is_file()]
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def nothing_tokenized(cache: Path) -> bool:
    """No dataset was read and no tokenizer trained: the lmforge cache holds nothing."""
    return not cache.exists() or not any(cache.rglob("*"))
