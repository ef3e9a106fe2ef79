"""Instruction tuning: does it learn, and what does LoRA cost against full fine-tuning?

Starts from a causal LM that lmforge pre-trained (a directory written by ``lmforge export``) and the bundled
instruction set (lmforge:instructions/{train,val}.jsonl), with the sft-lora recipe's data settings.

1. Learning. Greedy exact match on the first ``--eval-examples`` held-out instructions
   (`lmforge.core.generation.generate_responses`, the chat template of the run) before any tuning, after
   ``--lora-steps`` of LoRA (the recipe's adapters and learning rate) and after ``--full-steps`` of full
   fine-tuning (every weight trains, ``--full-lr``); each fit through the real trainer, with its wall time.
   The size of each run's last checkpoint is measured too.
2. Cost, side by side in one process: training steps of the two models alternate (LoRA, full, LoRA, ...) on
   the same batches; each measurement times ``--cost-steps`` steps; the script prints each mode's median step
   time and the median over repeats of the full/LoRA ratio. Memory: what training holds besides activations
   (weights, gradients, AdamW moments), counted from the tensors; with a GPU also the peak allocated.

    lmforge fit --config quickstart
    lmforge export runs/quickstart/version_0/checkpoints/last.ckpt models/sft-base
    python benchmarks/sft.py --base models/sft-base            # about 15 minutes on 2 quiet CPU cores
    python benchmarks/sft.py --base models/sft-base --modules-to-save lm_head --skip-cost   # LoRA + embeddings
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: The sft-lora recipe's adapters (``--modules-to-save lm_head`` also trains the tied embedding/output matrix).
LORA = dict(r=16, alpha=32.0, dropout=0.0, target_modules="all-linear")


def make_data(args: argparse.Namespace, cache: str):
    from lmforge.core.data.instruction_data import InstructionData
    from lmforge.core.data.tokenizer import TokenizerSpec

    return InstructionData(train="lmforge:instructions/train.jsonl", val="lmforge:instructions/val.jsonl",
                           tokenizer=TokenizerSpec(path=args.base), max_length=args.max_length,
                           batch_size=args.batch_size, cache_dir=cache, seed=0)


def make_model(args: argparse.Namespace, mode: str, steps: int):
    from lmforge.core.backbone import Backbone
    from lmforge.core.lora import LoraSpec
    from lmforge.core.module import LanguageModel
    from lmforge.plugins.objectives.causal_lm import CausalLM

    settings = {**LORA, "modules_to_save": args.modules_to_save or None}
    lora = LoraSpec(**settings) if mode == "lora" else None
    lr = args.lora_lr if mode == "lora" else args.full_lr
    return LanguageModel(
        Backbone(architecture=None, pretrained=args.base, lora=lora), CausalLM(),
        optimizer={"class_path": "torch.optim.AdamW", "init_args": {"lr": lr, "weight_decay": 0.0}},
        lr_scheduler={"class_path": "lmforge.core.schedules.WarmupCosineLR",
                      "init_args": {"warmup_steps": min(30, steps // 10)}})


def trainer(steps: int, **kwargs: Any):
    from lightning.pytorch import Trainer

    return Trainer(max_steps=steps, accelerator="auto", devices=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                   num_sanity_val_steps=0, gradient_clip_val=1.0, **kwargs)


def exact_match_of(backbone, tokenizer, conversations, template: str, args: argparse.Namespace) -> float:
    from lmforge.core.data.instruction import exact_match
    from lmforge.core.generation import generate_responses, prompt_and_reference

    questions, references = zip(*(prompt_and_reference(c) for c in conversations))
    answers = generate_responses(backbone.eval(), tokenizer, list(questions), template,
                                 max_new_tokens=args.max_new_tokens, batch_size=32)
    return sum(exact_match(a, r) for a, r in zip(answers, references)) / len(answers)


def learning(args: argparse.Namespace, cache: str, out: Path) -> dict[str, dict[str, float]]:
    import torch
    from lightning.pytorch import seed_everything
    from transformers import AutoModelForCausalLM

    data = make_data(args, cache)
    data.setup("fit")
    conversations = data.val_conversations[: args.eval_examples]
    base = AutoModelForCausalLM.from_pretrained(args.base, local_files_only=True)
    results = {"before": {"exact_match": exact_match_of(base, data.tokenizer, conversations, data.template, args),
                          "steps": 0, "seconds": 0.0}}
    print(f"before SFT: exact match {results['before']['exact_match']:.3f}", flush=True)
    for mode, steps in (("lora", args.lora_steps), ("full", args.full_steps)):
        seed_everything(0, verbose=False)
        model = make_model(args, mode, steps)
        fit = trainer(steps)
        data = make_data(args, cache)
        start = time.perf_counter()
        fit.fit(model, datamodule=data)
        seconds = time.perf_counter() - start
        ckpt = out / f"{mode}.ckpt"
        fit.save_checkpoint(ckpt)
        with torch.no_grad():
            score = exact_match_of(model.backbone, model.tokenizer, conversations, data.template, args)
        results[mode] = {"exact_match": score, "steps": steps, "seconds": seconds,
                         "checkpoint_mb": ckpt.stat().st_size / 2**20}
        print(f"after {mode}: exact match {score:.3f} after {steps} steps in {seconds:.0f} s; checkpoint "
              f"{results[mode]['checkpoint_mb']:.2f} MiB", flush=True)
    return results


def step_times(args: argparse.Namespace, cache: str) -> dict[str, list[float]]:
    """Seconds per training step of each mode, measured alternately on the same batches (plain loop)."""
    import torch

    from lmforge.core.data.instruction_layout import model_inputs

    data = make_data(args, cache)
    data.setup("fit")
    batches = []
    for batch in data.train_dataloader():
        batches.append(batch)
        if len(batches) == args.cost_steps + 1:
            break
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
    models = {}
    for mode in ("lora", "full"):
        torch.manual_seed(0)
        module = make_model(args, mode, args.cost_steps)
        module.tokenizer = data.tokenizer
        module.configure_model()
        backbone = module.backbone.train().to(device)
        params = [p for p in backbone.parameters() if p.requires_grad]
        models[mode] = (backbone, torch.optim.AdamW(params, lr=1e-4))
    times: dict[str, list[float]] = {"lora": [], "full": []}
    for _ in range(args.cost_repeats):
        for mode, (backbone, optimizer) in models.items():
            for i, batch in enumerate(batches):
                if i == 1:  # after a warm-up step
                    start = time.perf_counter()
                loss = backbone(**model_inputs(batch), labels=batch["labels"]).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[mode].append((time.perf_counter() - start) / (len(batches) - 1))
    return times


def state_memory(args: argparse.Namespace, cache: str) -> dict[str, dict[str, float]]:
    """MiB that training holds besides activations, per mode: the weights, the gradients of the trainable ones and
    AdamW's two moments of each (counted from the tensors after one step), and with a GPU the peak allocated over
    a few steps."""
    import torch

    from lmforge.core.data.instruction_layout import model_inputs

    data = make_data(args, cache)
    data.setup("fit")
    batches = [b for _, b in zip(range(3), data.train_dataloader())]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = {}
    for mode in ("lora", "full"):
        module = make_model(args, mode, 3)
        module.tokenizer = data.tokenizer
        module.configure_model()
        backbone = module.backbone.train().to(device)
        optimizer = torch.optim.AdamW([p for p in backbone.parameters() if p.requires_grad], lr=1e-4)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            backbone(**model_inputs(batch), labels=batch["labels"]).loss.backward()
            optimizer.step()
        mib = lambda tensors: sum(t.numel() * t.element_size() for t in tensors) / 2**20  # noqa: E731
        params = list(backbone.parameters())
        out[mode] = {"weights": mib(params), "grads": mib(p.grad for p in params if p.grad is not None),
                     "adam": mib(v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)
                                 and v.dim() > 0)}
        if device.type == "cuda":
            out[mode]["cuda_peak"] = torch.cuda.max_memory_allocated() / 2**20
        del backbone, optimizer, module
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="a causal LM directory (lmforge export of a pre-training run)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lora-steps", type=int, default=600)
    parser.add_argument("--full-steps", type=int, default=600)
    parser.add_argument("--lora-lr", type=float, default=2e-3, help="the sft-lora recipe's")
    parser.add_argument("--full-lr", type=float, default=1e-3)
    parser.add_argument("--modules-to-save", nargs="*", default=[],
                        help="LoRA's modules trained in full besides the adapters (the recipe's: none); lm_head "
                             "trains gpt2's output layer and the input embeddings tied to it")
    parser.add_argument("--eval-examples", type=int, default=128)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--cost-steps", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--cost-repeats", type=int, default=8)
    parser.add_argument("--skip-learning", action="store_true")
    parser.add_argument("--skip-cost", action="store_true")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    import datasets
    import torch

    datasets.disable_progress_bars()
    print(f"base {args.base}; {torch.get_num_threads()} threads; "
          f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}", flush=True)
    with tempfile.TemporaryDirectory() as cache:
        if not args.skip_learning:
            learning(args, cache, Path(cache))
        if args.skip_cost:
            return
        times = step_times(args, cache)
        ratios = [f / lo for f, lo in zip(times["full"], times["lora"])]
        for mode in times:
            print(f"  {mode:<5} step {1000 * statistics.median(times[mode]):7.1f} ms (median of "
                  f"{', '.join(f'{1000 * t:.0f}' for t in times[mode])})")
        print(f"  full / LoRA step time: median ratio {statistics.median(ratios):.2f}")
        memory = state_memory(args, cache)
    for mode, parts in memory.items():
        print(f"  {mode:<5} memory: " + ", ".join(f"{k} {v:.2f} MiB" for k, v in parts.items()))


if __name__ == "__main__":
    main()
