"""GPT-2 small (12 layers x 768, ~125 M parameters with GPT-2's vocabulary) on one GPU: lmforge against a
plain PyTorch loop and the HF Trainer, bf16, SDPA attention, ``torch.compile`` off and on.

Needs a CUDA GPU; nothing in the test suite depends on it. Same work for every runner: the bundled corpus
packed by lmforge's TextData into blocks of 1024 tokens (BPE tokenizer trained on it), batches of 8,
AdamW (fused; lr 6e-4, weight decay 0.1 on matrices), warmup-cosine, clipping at 1.0, bf16 autocast
(``bf16-mixed`` in lmforge, ``bf16=True`` in the Trainer). Each runner in a fresh process, alternating;
every runner synchronises the GPU at the end of each step, and only the steps after ``--warmup`` count
(compilation happens in the warm-up). Reports tokens/s, the median of per-round ratios, and model FLOPs
utilisation: (6 N + 12 L d T) FLOPs per token (PaLM's count: N parameters, L layers, width d, T tokens
of context) over ``--peak-tflops`` (default 989: an H100/H200 SXM's dense bf16 peak).

The bundled corpus is small, so the tokenizer (and the model's vocabulary, in every runner) has about
3.4 k tokens rather than GPT-2's 50 k, and the model ~88 M parameters rather than 125 M: the blocks, and so
the attention and MLP work per token, are GPT-2 small's.

    python benchmarks/gpu_gpt2_125m.py --rounds 3 --out gpu.json          # ~10 min on an H100/H200
    python benchmarks/gpu_gpt2_125m.py --dry-run                         # a CPU smoke test of the script
    python benchmarks/gpu_gpt2_125m.py --dry-run --rounds 5 --steps 30 --warmup 5   # the step overhead on CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import perf  # noqa: E402  (the CPU benchmark: data preparation, recipes, timing helpers)

CONFIG = {"n_layer": 12, "n_embd": 768, "n_head": 12}
LR, WEIGHT_DECAY, WARMUP, CLIP = 6e-4, 0.1, 10, 1.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=None, help="alternation rounds (default 3; 1 with --dry-run)")
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default 60; 6 with --dry-run)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="steps left out; compilation happens here (default 20; 2 with --dry-run)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak")
    parser.add_argument("--compile", default="off,on", help="comma-separated: off, on")
    parser.add_argument("--runners", default="plain,lmforge,hf", help="comma-separated subset of plain,lmforge,hf")
    parser.add_argument("--out", default="gpu.json")
    parser.add_argument("--dry-run", action="store_true", help="a tiny model on the CPU in fp32: checks the script")
    parser.add_argument("--worker", choices=["plain", "hf"], help=argparse.SUPPRESS)
    parser.add_argument("--compiled", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    defaults = (6, 2, 1) if args.dry_run else (60, 20, 3)
    args.steps, args.warmup, args.rounds = (given if given is not None else default for given, default
                                            in zip((args.steps, args.warmup, args.rounds), defaults))
    if args.dry_run:
        args.block_size, args.batch_size = 64, 2
        args.compile = "off"
    return args


def device_setup(args: argparse.Namespace) -> tuple[str, Any]:
    import torch

    if args.dry_run:
        return "cpu", torch.float32
    return "cuda", torch.bfloat16


def model_config(args: argparse.Namespace) -> dict[str, int]:
    return {"n_layer": 2, "n_embd": 64, "n_head": 2} if args.dry_run else CONFIG


def build(args: argparse.Namespace, work: Path) -> tuple[Any, Any]:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    blocks = torch.load(work / "gpt2" / "blocks.pt")
    vocab = json.loads((work / "gpt2" / "meta.json").read_text())["vocab_size"]
    config = GPT2Config(vocab_size=vocab, n_positions=args.block_size, bos_token_id=None, eos_token_id=None,
                        attn_implementation="sdpa", **model_config(args))
    return GPT2LMHeadModel(config), blocks


def worker_plain(args: argparse.Namespace, work: Path) -> None:
    """The careful hand-written loop: bf16 autocast, fused AdamW (on the CPU too), optional torch.compile."""
    import torch
    from torch.utils.data import DataLoader

    from lmforge.core.schedules import WarmupCosineLR

    device, dtype = device_setup(args)
    torch.manual_seed(42)
    model, blocks = build(args, work)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2]},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=LR, weight_decay=WEIGHT_DECAY, fused=True)
    sched = WarmupCosineLR(opt, warmup_steps=WARMUP, total_steps=args.steps)
    forward = torch.compile(model) if args.compiled else model
    loader = DataLoader(blocks, batch_size=args.batch_size, shuffle=True, drop_last=True, pin_memory=device == "cuda",
                        generator=torch.Generator().manual_seed(0))
    end: list[float] = []
    it = iter(loader)
    for _ in range(args.steps):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        ids = batch.to(device, non_blocking=True).long()
        with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
            loss = forward(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        end.append(time.perf_counter())
    perf.write(args.result, {"start": [], "end": end, "first_step_s": float("nan"), "max_rss_mb": float("nan")})


def worker_hf(args: argparse.Namespace, work: Path) -> None:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    device, dtype = device_setup(args)
    torch.manual_seed(42)
    model, blocks = build(args, work)
    end: list[float] = []

    class Blocks(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(blocks)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            ids = blocks[i].long()
            return {"input_ids": ids, "labels": ids}

    class StepTimes(TrainerCallback):
        def on_step_end(self, *a: Any, **k: Any) -> None:
            if device == "cuda":
                torch.cuda.synchronize()
            end.append(time.perf_counter())

    targs = TrainingArguments(
        output_dir=str(work / "hf-out"), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        learning_rate=LR, weight_decay=WEIGHT_DECAY, max_grad_norm=CLIP, warmup_steps=WARMUP,
        lr_scheduler_type="cosine", optim="adamw_torch_fused" if device == "cuda" else "adamw_torch",
        bf16=dtype == torch.bfloat16, torch_compile=args.compiled, report_to="none", logging_steps=10_000,
        save_strategy="no", eval_strategy="no", dataloader_num_workers=0, dataloader_pin_memory=device == "cuda",
        disable_tqdm=True, seed=42, use_cpu=device == "cpu",
    )
    Trainer(model=model, args=targs, train_dataset=Blocks(), callbacks=[StepTimes()]).train()
    perf.write(args.result, {"start": [], "end": end, "first_step_s": float("nan"), "max_rss_mb": float("nan")})


def lmforge_recipe(work: Path, args: argparse.Namespace, compiled: bool) -> Path:
    """perf.py's bare GPT-2 recipe, at this size, on the GPU in bf16-mixed with fused AdamW."""
    pargs = argparse.Namespace(steps=args.steps, block_size=args.block_size, batch_size=args.batch_size)
    path = perf.recipe(work, pargs, f"gpu-{'compiled' if compiled else 'eager'}", bare=True,
                       model=model_config(args), arch="gpt2")
    r = yaml.safe_load(path.read_text(encoding="utf-8"))
    r["model"]["backbone"]["attn_implementation"] = "sdpa"
    r["model"]["compile"] = compiled
    r["optimizer"] = {"class_path": "torch.optim.AdamW",
                      "init_args": {"lr": LR, "weight_decay": WEIGHT_DECAY, "fused": True}}
    r["lr_scheduler"] = {"class_path": "lmforge.core.schedules.WarmupCosineLR", "init_args": {"warmup_steps": WARMUP}}
    r["trainer"].update(accelerator="cpu" if args.dry_run else "gpu", devices=1,
                        precision="32-true" if args.dry_run else "bf16-mixed")
    path.write_text(yaml.safe_dump(r, sort_keys=False), encoding="utf-8")
    return path


def flops_per_token(args: argparse.Namespace, n_params: int) -> float:
    c = model_config(args)
    return 6 * n_params + 12 * c["n_layer"] * c["n_embd"] * args.block_size


def main() -> None:
    args = parse_args()
    if args.worker:
        {"plain": worker_plain, "hf": worker_hf}[args.worker](args, Path(args.work_dir))
        return
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("gpu_gpt2_125m.py: no CUDA GPU here; run it on a GPU machine (or --dry-run to check it).")
    env = {**perf.ENV}
    env.pop("OMP_NUM_THREADS", None)
    env.pop("MKL_NUM_THREADS", None)
    perf.ENV.clear()
    perf.ENV.update(env)  # the GPU runners use the host's threads for data and launches
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pargs = argparse.Namespace(block_size=args.block_size, batch_size=args.batch_size)
        perf.prepare(work, pargs, "gpt2")
        n_params = sum(p.numel() for p in build(args, work)[0].parameters())
        timing = argparse.Namespace(warmup=args.warmup, batch_size=args.batch_size, block_size=args.block_size)
        results: dict[str, Any] = {"args": vars(args), "n_params": n_params, "rounds": {}}
        for mode in args.compile.split(","):
            compiled = mode == "on"
            me = [sys.executable, str(Path(__file__).resolve()), "--work-dir", str(work), "--steps", str(args.steps),
                  "--batch-size", str(args.batch_size), "--block-size", str(args.block_size)] + (["--compiled"] if compiled else []) + (
                  ["--dry-run"] if args.dry_run else [])
            runners = {"plain": me + ["--worker", "plain"],
                       "lmforge": perf.LMFORGE + ["fit", "--config", str(lmforge_recipe(work, args, compiled))],
                       "hf": me + ["--worker", "hf"]}
            runners = {k: v for k, v in runners.items() if k in args.runners.split(",")}
            rounds = []
            for rnd in range(args.rounds):
                row = {}
                for name in (list(runners) if rnd % 2 == 0 else list(reversed(runners))):
                    result = work / f"{name}.json"
                    cmd = runners[name] + (["--result", str(result)] if name != "lmforge" else [])
                    row[name] = perf.steady(perf.run_child(cmd, result, work), timing)
                    print(f"  compile {mode} round {rnd + 1} {name:<8} {row[name]['tokens_per_s']:10.0f} tokens/s",
                          flush=True)
                rounds.append(row)
            results["rounds"][mode] = rounds
        report(results, args, n_params)
        Path(args.out).write_text(json.dumps(results, indent=1), encoding="utf-8")


def report(results: dict[str, Any], args: argparse.Namespace, n_params: int) -> None:
    fpt = flops_per_token(args, n_params)
    print(f"\nGPT-2 {model_config(args)} ({n_params / 1e6:.0f} M parameters), batch {args.batch_size} x "
          f"{args.block_size}, {'fp32 CPU (dry run)' if args.dry_run else 'bf16'}:")
    print(f"  {'compile':<8} {'runner':<8} {'tokens/s':>10} {'MFU':>7}")
    for mode, rounds in results["rounds"].items():
        for name in rounds[0]:
            tps = statistics.median(r[name]["tokens_per_s"] for r in rounds)
            mfu = "-" if args.dry_run else f"{100 * tps * fpt / (args.peak_tflops * 1e12):.1f}%"
            print(f"  {mode:<8} {name:<8} {tps:10.0f} {mfu:>7}")
        for a, b in (("lmforge", "plain"), ("lmforge", "hf")):
            if a not in rounds[0] or b not in rounds[0]:
                continue
            ratio = perf.summary([r[a]["tokens_per_s"] / r[b]["tokens_per_s"] for r in rounds])
            print(f"  {mode:<8} {a}/{b}: {ratio['median']:.3f} [{ratio['min']:.3f}, {ratio['max']:.3f}]")


if __name__ == "__main__":
    main()
