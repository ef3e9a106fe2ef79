"""Does pre-training help? Fine-tune from a masked-LM pre-trained BERT vs from random weights.

1. Pre-train a small BERT with MaskedLM on the bundled corpus (lmforge:corpus/train.txt), as the
   mlm-pretrain recipe does but smaller and shorter.
2. Fine-tune it on a small labeled subset (``--train-examples``, balanced by class) of the bundled
   sentiment reviews, and of the NER sentences, starting once from the pre-training checkpoint
   (``Backbone.checkpoint``) and once from random weights of the same architecture: same tokenizer
   (the pre-training run's), data, steps, learning rate and seeds.
3. Validate both on the full bundled validation sets and print accuracy / macro-F1 (sentiment) and
   word accuracy / entity F1 (NER), mean and spread over the fine-tuning seeds, and the difference.

    python benchmarks/transfer.py                       # a few minutes on 2 CPU cores
    python benchmarks/transfer.py --pretrain-steps 3000 --train-examples 300 --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from lightning.pytorch import Trainer, seed_everything  # noqa: E402

from lmforge.core.backbone import Backbone  # noqa: E402
from lmforge.core.data.text import TextData  # noqa: E402
from lmforge.core.data.files import bundled_data_dir  # noqa: E402
from lmforge.core.data.labeled import LabeledTextData  # noqa: E402
from lmforge.core.module import LanguageModel  # noqa: E402
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining  # noqa: E402
from lmforge.plugins.objectives.masked_lm import MaskedLM  # noqa: E402
from lmforge.plugins.objectives.sequence_classification import SequenceClassification  # noqa: E402
from lmforge.plugins.objectives.token_classification import TokenClassification  # noqa: E402

TASKS = {
    "sentiment": {"file": "sentiment", "text": "text", "label": "label", "objective": SequenceClassification,
                  "metrics": ("val/accuracy", "val/macro_f1")},
    "ner": {"file": "ner", "text": "tokens", "label": "tags", "objective": TokenClassification,
            "metrics": ("val/accuracy", "val/entity_f1")},
}


def trainer(steps: int, **kwargs) -> Trainer:
    return Trainer(max_steps=steps, accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                   limit_val_batches=0, gradient_clip_val=1.0, **kwargs)


def adamw(lr: float) -> dict:
    return {"class_path": "torch.optim.AdamW", "init_args": {"lr": lr, "weight_decay": 0.01}}


def warmup_cosine(warmup: int) -> dict:
    return {"class_path": "lmforge.core.schedules.WarmupCosineLR", "init_args": {"warmup_steps": warmup}}


def pretrain(args: argparse.Namespace, architecture: dict, out: Path) -> tuple[Path, Path]:
    seed_everything(0, verbose=False)
    data = TextData(train="lmforge:corpus/train.txt", val="lmforge:corpus/val.txt", block_size=args.block_size,
                    batch_size=32, cache_dir=str(out / "cache"), seed=0,
                    tokenizer=TokenizerSpec(train=TokenizerTraining(algorithm="wordpiece", vocab_size=args.vocab_size)))
    model = LanguageModel(Backbone("bert", architecture), MaskedLM(), optimizer=adamw(args.pretrain_lr),
                          lr_scheduler=warmup_cosine(args.pretrain_steps // 10))
    fit = trainer(args.pretrain_steps)
    fit.fit(model, datamodule=data)
    (result,) = Trainer(accelerator="auto", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False).validate(model, datamodule=data, verbose=False)
    print(f"pre-training: {args.pretrain_steps} steps, val/loss {result['val/loss']:.3f}, "
          f"masked-token accuracy {result['val/accuracy']:.3f}")
    fit.save_checkpoint(out / "mlm.ckpt")
    data.tokenizer.save_pretrained(str(out / "tokenizer"))
    return out / "mlm.ckpt", out / "tokenizer"


def balanced_subset(task: str, n: int, out: Path) -> Path:
    """The first rows of the bundled training file, ``n`` in all, in equal shares per class (NER: the first n)."""
    spec = TASKS[task]
    rows = [json.loads(line) for line in (bundled_data_dir() / spec["file"] / "train.jsonl").read_text().splitlines()]
    if task == "sentiment":
        labels = sorted({r["label"] for r in rows})
        per_class = n // len(labels)
        rows = [r for label in labels for r in [r for r in rows if r["label"] == label][:per_class]]
    else:
        rows = rows[:n]
    path = out / f"{task}-{n}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def finetune(task: str, init: str, seed: int, args: argparse.Namespace, architecture: dict, ckpt: Path,
             tokenizer: Path, train_file: Path, out: Path) -> dict[str, float]:
    spec = TASKS[task]
    seed_everything(seed, verbose=False)
    data = LabeledTextData(train=str(train_file), val=f"lmforge:{spec['file']}/val.jsonl", text_column=spec["text"],
                           label_column=spec["label"], tokenizer=TokenizerSpec(path=str(tokenizer)),
                           max_length=args.block_size, batch_size=args.batch_size, cache_dir=str(out / "cache"),
                           seed=seed)
    backbone = Backbone(checkpoint=str(ckpt)) if init == "pretrained" else Backbone("bert", architecture)
    model = LanguageModel(backbone, spec["objective"](), optimizer=adamw(args.finetune_lr),
                          lr_scheduler=warmup_cosine(args.finetune_steps // 10))
    trainer(args.finetune_steps).fit(model, datamodule=data)
    (result,) = Trainer(accelerator="auto", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False).validate(model, datamodule=data, verbose=False)
    return {k: float(result[k]) for k in spec["metrics"]}


def summary(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain-steps", type=int, default=800)
    parser.add_argument("--pretrain-lr", type=float, default=1e-3)
    parser.add_argument("--finetune-steps", type=int, default=150)
    parser.add_argument("--finetune-lr", type=float, default=5e-4)
    parser.add_argument("--train-examples", type=int, default=240, help="labeled training examples per task")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--vocab-size", type=int, default=4000)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--out", default="runs/transfer")
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    import datasets

    datasets.disable_progress_bars()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    architecture = {"num_hidden_layers": args.layers, "hidden_size": args.hidden,
                    "num_attention_heads": max(1, args.hidden // 64), "intermediate_size": 4 * args.hidden,
                    "max_position_embeddings": max(128, args.block_size)}
    print(f"BERT {architecture}, torch threads {torch.get_num_threads()}")
    start = time.perf_counter()
    ckpt, tokenizer = pretrain(args, architecture, out)
    print(f"  ({time.perf_counter() - start:.0f} s)")
    for task in args.tasks:
        train_file = balanced_subset(task, args.train_examples, out)
        results: dict[str, list[dict[str, float]]] = {"pretrained": [], "random": []}
        start = time.perf_counter()
        for seed in args.seeds:
            for init in results:
                results[init].append(finetune(task, init, seed, args, architecture, ckpt, tokenizer, train_file, out))
        print(f"\n{task}: {args.train_examples} training examples, {args.finetune_steps} steps of "
              f"{args.batch_size}, seeds {args.seeds} ({time.perf_counter() - start:.0f} s)")
        metrics = TASKS[task]["metrics"]
        print(f"  {'init':<12}" + "".join(f"{m:>22}" for m in metrics))
        for init, runs in results.items():
            print(f"  {init:<12}" + "".join(f"{summary([r[m] for r in runs]):>22}" for m in metrics))
        gains = [summary([p[m] - r[m] for p, r in zip(results["pretrained"], results["random"])]) for m in metrics]
        print(f"  {'difference':<12}" + "".join(f"{g:>22}" for g in gains) + "   (pretrained - random, per seed)")


if __name__ == "__main__":
    main()
