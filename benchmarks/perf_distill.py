"""perf.py's ``distill`` section: a logit-distillation step against a plain student step, in one process.

The student is perf.py's GPT-2 (2 x 128, the quickstart model), the teacher the same shape with twice the
blocks (4 x 128), saved as a local HF directory with perf.py's prepared tokenizer (BPE 4k); the batch is
16 x 128 tokens of the prepared blocks. Contenders, timed in turn, the order rotating every round:

  student   LanguageModel.training_step + backward + AdamW step, no distiller
  KD        the same with LogitDistillation(T=2) from the teacher
  KD top-k  the same with teacher_top_k=32 from the cache of the teacher's top 32, warmed before timing
            (every row hits: the teacher does not run)
  KD top-k cold  the same with every row missing (the cache's rows forgotten before each step): the
            teacher runs, its top 32 are taken and written, as in a first epoch
  teacher   the teacher's forward pass alone, as the distiller runs it
  KL        logit_distillation_loss forward + backward alone, on logits of the step's shape
  KL top-k  sparse_distillation_loss forward + backward alone, from 32 teacher logits per position and
            the teacher's mass off them, as the distiller calls it

Reported: medians of per-round ratios to the student step. The process sets lmforge's allocator settings
first, as ``lmforge fit`` does (lmforge/runtime/allocator.py), and runs torch on one thread.

    python benchmarks/perf.py --only distill --rounds 30
    python benchmarks/perf_distill.py --work-dir W --result r.json --rounds 30   # the worker, after perf.py's prepare
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STUDENT = {"n_layer": 2, "n_embd": 128, "n_head": 4}
TEACHER = {"n_layer": 4, "n_embd": 128, "n_head": 4}
TEMPERATURE = 2.0
TOP_K = 32
CONTENDERS = ("KD", "KD top-k", "KD top-k cold", "teacher", "KL", "KL top-k")


def section(work: Path, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """Run the worker in a fresh process; its rounds and the ratios (median, min, max)."""
    result = work / "distill.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--work-dir", str(work), "--result", str(result),
           "--rounds", str(max(args.rounds, 10)), "--batch-size", str(args.batch_size),
           "--block-size", str(args.block_size)]
    subprocess.run(cmd, env=env, cwd=work, check=True, stdout=subprocess.DEVNULL)
    times = json.loads(result.read_text(encoding="utf-8"))
    out: dict[str, Any] = {"ms": {k: 1000 * statistics.median(v) for k, v in times.items()}}
    for name in CONTENDERS:
        ratios = [a / b for a, b in zip(times[name], times["student"], strict=True)]
        out[f"{name}/student"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
                                  "n": len(ratios)}
    return out


def report(result: dict[str, Any]) -> None:
    print("\nDistillation (student GPT-2 2x128, teacher 4x128, T=2), medians of per-round ratios to the student step:")
    print("  " + ", ".join(f"{k} {v:.1f} ms" for k, v in result["ms"].items()))
    for key in (f"{name}/student" for name in CONTENDERS):
        if key not in result:  # a result saved before the contender existed
            continue
        v = result[key]
        print(f"  {key:<22} {v['median']:.3f} [{v['min']:.3f}, {v['max']:.3f}]")


def alternate(contenders: dict[str, Callable[[], object]], rounds: int, warmup: int = 3) -> dict[str, list[float]]:
    """Seconds per call of each contender; the order rotates every round so drift hits all alike."""
    names = list(contenders)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            contenders[name]()
            if r >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def worker(args: argparse.Namespace) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lmforge.runtime.allocator import tune_malloc

    tune_malloc()
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lmforge.core.backbone import Backbone
    from lmforge.core.data.tokenizer import load_tokenizer
    from lmforge.core.module import LanguageModel
    from lmforge.plugins.distillation.logit_distillation import (
        LogitDistillation,
        logit_distillation_loss,
        probability_off_top_k,
        sparse_distillation_loss,
    )
    from lmforge.plugins.objectives.causal_lm import CausalLM

    torch.set_num_threads(1)
    torch.manual_seed(0)
    work = Path(args.work_dir)
    tok_dir = work / "gpt2" / "tokenizer"
    tok = load_tokenizer(tok_dir)
    teacher_dir = work / "distill-teacher"
    config = AutoConfig.for_model("gpt2", **TEACHER, n_positions=args.block_size, vocab_size=len(tok),
                                  pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                  eos_token_id=tok.eos_token_id)
    AutoModelForCausalLM.from_config(config).save_pretrained(teacher_dir)
    shutil.rmtree(work / "distill-cache", ignore_errors=True)  # the cached contender starts from an empty cache
    tok.save_pretrained(teacher_dir)

    def model(distiller: LogitDistillation | None) -> LanguageModel:
        lm = LanguageModel(Backbone("gpt2", {**STUDENT, "n_positions": args.block_size}), CausalLM(),
                           distiller=distiller)
        lm.tokenizer = tok
        lm.configure_model()
        lm.train()
        return lm

    student, kd = model(None), model(LogitDistillation(str(teacher_dir), temperature=TEMPERATURE))
    cached = model(LogitDistillation(str(teacher_dir), temperature=TEMPERATURE, teacher_top_k=TOP_K,
                                     teacher_cache=str(work / "distill-cache")))
    cold = model(LogitDistillation(str(teacher_dir), temperature=TEMPERATURE, teacher_top_k=TOP_K,
                                   teacher_cache=str(work / "distill-cache")))
    blocks = torch.load(work / "gpt2" / "blocks.pt")[: args.batch_size].long()
    batch = {"input_ids": blocks, "attention_mask": torch.ones_like(blocks), "labels": blocks.clone()}

    def step(lm: LanguageModel) -> Callable[[], None]:
        optimizer = torch.optim.AdamW(lm.param_groups(), lr=1e-4, fused=True)

        def run() -> None:
            loss = lm.training_step(dict(batch), 0)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return run

    teacher = kd.distiller._teacher
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    # As the distiller runs it: .logits (inference mode) where it exists, the plain call before it did.
    teacher_forward = (lambda: teacher.logits(inputs)) if hasattr(teacher, "logits") else (lambda: teacher(inputs))
    shape = (*blocks.shape, len(tok))
    s_logits = torch.randn(shape, requires_grad=True)
    t_logits = torch.randn(shape)
    mask = torch.ones(blocks.shape, dtype=torch.bool)
    mask[:, -1] = False

    def kl() -> None:
        logit_distillation_loss(s_logits, t_logits, TEMPERATURE, mask).backward()
        s_logits.grad = None

    t_values, t_ids = t_logits.topk(TOP_K, dim=-1)
    t_rest = probability_off_top_k(t_logits, t_ids, TEMPERATURE)
    t_ids = t_ids.short()  # as the cache stores them

    def kl_top_k() -> None:
        sparse_distillation_loss(s_logits, t_values, t_ids, TEMPERATURE, mask, t_rest).backward()
        s_logits.grad = None

    cached_step = step(cached)
    cached_step()  # fills the cache: from here on every row hits
    if len(cached.distiller._cache) != args.batch_size:
        raise RuntimeError(f"the warmed cache holds {len(cached.distiller._cache)} rows, not the batch's {args.batch_size}")
    cold_step = step(cold)

    def cold_start() -> None:
        if cold.distiller._cache is not None:
            cold.distiller._cache._rows.clear()  # forgotten: every row misses (its file is rewritten, same name)
        cold_step()

    times = alternate({"student": step(student), "KD": step(kd), "KD top-k": cached_step, "KD top-k cold": cold_start,
                       "teacher": teacher_forward, "KL": kl, "KL top-k": kl_top_k}, args.rounds)
    Path(args.result).write_text(json.dumps(times), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", required=True, help="perf.py's work dir (its prepared gpt2/ tokenizer and blocks)")
    parser.add_argument("--result", required=True)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--block-size", type=int, default=128)
    worker(parser.parse_args())


if __name__ == "__main__":
    main()
