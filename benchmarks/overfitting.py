"""Overfitting on a tiny corpus, without and with the regularized-clm pieces.

Trains the same small GPT-2 twice on the first 60 documents of the bundled
corpus and validates on held-out text every --val-every steps:

- plain: no dropout, no weight decay, no augmentation;
- regularized: what the ``regularized-clm`` recipe combines: Dropout 0.1
  (hidden, attention, embedding), RDrop (alpha 1), AdamW weight decay 0.1,
  SynonymReplacement (one augmented copy per document) and TokenNoise (10 %
  of the tokens replaced, fresh every step).

Both runs stop with Lightning's EarlyStopping on val/loss (patience
--patience validations), as the bundled recipes do. At each validation the
table shows the training loss (the clean 60 documents, in eval mode: no
dropout, no noise, so both runs are measured alike) and the validation loss.

    python benchmarks/overfitting.py            # about 2 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch import Callback, Trainer, seed_everything  # noqa: E402
from lightning.pytorch.callbacks import EarlyStopping  # noqa: E402

from lmforge.core.backbone import Backbone  # noqa: E402
from lmforge.core.data.text import TextData, pack  # noqa: E402
from lmforge.core.data.files import bundled_data_dir  # noqa: E402
from lmforge.core.module import LanguageModel  # noqa: E402
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining  # noqa: E402
from lmforge.plugins.augmenters.synonym_replacement import SynonymReplacement  # noqa: E402
from lmforge.plugins.augmenters.token_noise import TokenNoise  # noqa: E402
from lmforge.plugins.objectives.causal_lm import CausalLM, causal_lm_loss  # noqa: E402
from lmforge.plugins.regularizers.dropout import Dropout  # noqa: E402
from lmforge.plugins.regularizers.r_drop import RDrop  # noqa: E402

BLOCK = 64
NO_DROPOUT = {"resid_pdrop": 0.0, "attn_pdrop": 0.0, "embd_pdrop": 0.0}


class Curve(Callback):
    """At each validation: the step, the clean training loss (eval mode) and val/loss."""

    def __init__(self, train_docs: list[str]) -> None:
        self.train_docs = train_docs
        self.train_blocks = torch.empty(0)
        self.rows: list[tuple[int, float, float]] = []

    def on_fit_start(self, trainer: Trainer, pl_module: LanguageModel) -> None:
        # The un-augmented training documents, packed like the training data, with the run's tokenizer.
        ids = trainer.datamodule.tokenizer(self.train_docs)["input_ids"]
        self.train_blocks = torch.from_numpy(pack(ids, BLOCK)[0]).long()

    def on_validation_end(self, trainer: Trainer, pl_module: LanguageModel) -> None:
        if trainer.sanity_checking:
            return
        was_training = pl_module.training
        pl_module.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for chunk in self.train_blocks.split(32):
                loss, n = causal_lm_loss(pl_module.backbone(input_ids=chunk).logits, chunk)
                total, count = total + float(loss) * int(n), count + int(n)
        pl_module.train(was_training)
        self.rows.append((trainer.global_step, total / count, float(trainer.callback_metrics["val/loss"])))


def write_slice(source: str, n_docs: int, path: Path) -> Path:
    lines = (bundled_data_dir() / source).read_text(encoding="utf-8").splitlines()[:n_docs]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(regularized: bool, args: argparse.Namespace, files: dict[str, Path]) -> tuple[list, float]:
    seed_everything(args.seed, workers=True)
    config = {"n_layer": 2, "n_embd": 128, "n_head": 4, "n_positions": BLOCK}
    if regularized:
        regularizers = [Dropout(hidden=0.1, attention=0.1, embedding=0.1), RDrop(alpha=1.0)]
        augmenters = [SynonymReplacement(alpha=0.1, copies=1), TokenNoise(replace_probability=0.1)]
        weight_decay = 0.1
    else:
        config.update(NO_DROPOUT)
        regularizers, augmenters, weight_decay = [], [], 0.0
    model = LanguageModel(Backbone(architecture="gpt2", config=config), CausalLM(),
                          regularizers=regularizers, augmenters=augmenters,
                          optimizer={"class_path": "torch.optim.AdamW",
                                     "init_args": {"lr": args.lr, "weight_decay": weight_decay}})
    data = TextData(train=str(files["train"]), val=str(files["val"]), block_size=BLOCK, batch_size=8,
                    tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=1000)),
                    cache_dir=str(files["cache"]), seed=args.seed)
    curve = Curve(files["train"].read_text(encoding="utf-8").splitlines())
    trainer = Trainer(max_steps=args.steps, val_check_interval=args.val_every, check_val_every_n_epoch=None,
                      accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, gradient_clip_val=1.0,
                      callbacks=[curve, EarlyStopping(monitor="val/loss", mode="min", patience=args.patience)])

    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    return curve.rows, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=60, help="training documents (from the bundled corpus)")
    parser.add_argument("--val-docs", type=int, default=60, help="validation documents (bundled val.txt)")
    parser.add_argument("--steps", type=int, default=600,
                        help="at most this many steps (EarlyStopping may stop sooner)")
    parser.add_argument("--val-every", type=int, default=25)
    parser.add_argument("--patience", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; on a shared 2-core machine 2 threads ran 8x slower than 1")
    args = parser.parse_args()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lmforge"):
        logging.getLogger(name).setLevel(logging.ERROR)
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        files = {"train": write_slice("corpus/train.txt", args.docs, Path(tmp) / "train.txt"),
                 "val": write_slice("corpus/val.txt", args.val_docs, Path(tmp) / "val.txt"),
                 "cache": Path(tmp) / "cache"}
        plain, plain_s = run(False, args, files)
        reg, reg_s = run(True, args, files)

    by_step: dict[int, dict[str, Any]] = {}
    for name, rows in (("plain", plain), ("reg", reg)):
        for step, train, val in rows:
            by_step.setdefault(step, {})[name] = (train, val)
    print(f"{args.docs} training documents, GPT-2 2x128, block {BLOCK}, batch 8, lr {args.lr}, seed {args.seed}")
    print(f"{'step':>5} | {'plain train':>11} {'plain val':>9} | {'reg train':>9} {'reg val':>7}")
    for step in sorted(by_step):
        cells = []
        for name in ("plain", "reg"):
            train, val = by_step[step].get(name, (math.nan, math.nan))
            cells.append(f"{train:>{11 if name == 'plain' else 9}.3f} {val:>{9 if name == 'plain' else 7}.3f}"
                         if not math.isnan(train) else f"{'(stopped)':>{21 if name == 'plain' else 17}}")
        print(f"{step:>5} | {cells[0]} | {cells[1]}")
    for name, rows, seconds in (("plain", plain, plain_s), ("regularized", reg, reg_s)):
        best = min(rows, key=lambda r: r[2])
        print(f"{name:>11}: best val {best[2]:.3f} at step {best[0]}, last val {rows[-1][2]:.3f} at step "
              f"{rows[-1][0]} (train {rows[-1][1]:.3f}); {seconds:.0f} s")


if __name__ == "__main__":
    main()
