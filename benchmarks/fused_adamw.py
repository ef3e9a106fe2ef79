"""AdamW ``fused=True`` against torch's default (foreach) implementation on this machine's CPU.

The quickstart's GPT-2 (2 layers x 128, 4k vocabulary), batches of 16 x 128 tokens, one torch thread: a full
training step (forward, backward, clipping, AdamW) with each implementation, alternating in one process in
rounds of ``--steps`` steps; reports step times and the median of per-round ratios (fused / default).

    python benchmarks/fused_adamw.py --rounds 7 --steps 20
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=4000, n_positions=128, n_layer=2, n_embd=128, n_head=4)
    models = {name: GPT2LMHeadModel(config) for name in ("default", "fused")}
    models["fused"].load_state_dict(models["default"].state_dict())
    optimizers = {}
    for name, model in models.items():
        params = [p for p in model.parameters()]
        groups = [{"params": [p for p in params if p.ndim >= 2]},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
        optimizers[name] = torch.optim.AdamW(groups, lr=2e-3, weight_decay=0.1, fused=name == "fused")
    data = torch.randint(0, 4000, (args.steps, 16, 128), generator=torch.Generator().manual_seed(1))

    def run(name: str) -> float:
        model, opt = models[name], optimizers[name]
        t0 = time.perf_counter()
        for ids in data:
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        return (time.perf_counter() - t0) / args.steps

    run("default"), run("fused")  # warm-up
    times: dict[str, list[float]] = {"default": [], "fused": []}
    for rnd in range(args.rounds):
        for name in (("default", "fused") if rnd % 2 == 0 else ("fused", "default")):
            times[name].append(run(name))
    ratios = [f / d for f, d in zip(times["fused"], times["default"])]
    for name, values in times.items():
        print(f"{name:<8} step {1000 * statistics.median(values):.1f} ms (median of {len(values)} rounds)")
    print(f"fused/default step time: median {statistics.median(ratios):.3f} [{min(ratios):.3f}, {max(ratios):.3f}]")


if __name__ == "__main__":
    main()
