"""Overhead of the EnergyMonitor callback (CodeCarbon, offline) on training step time.

Runs short Lightning trainings of a quickstart-sized GPT-2 (2 layers, 128 wide, from a config) on random
tokens, on CPU, alternately without and with the monitor (A B A B ...), and reports the median over
pairs of the ratio of median step times (B / A), for CodeCarbon's sampling every ``--measure-power-secs``.
Also reports what starting the tracker costs (once per run, before the first step).

    python benchmarks/energy_overhead.py [--pairs 6] [--steps 150] [--measure-power-secs 10 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset

from lmforge.runtime.observe.energy import EnergyMonitor

VOCAB, BLOCK, BATCH = 2000, 128, 8


class StepTimer(Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0
        self.fit_start = 0.0
        self.first_step = 0.0

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.fit_start = time.perf_counter()

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._start = time.perf_counter()
        if not self.first_step:
            self.first_step = self._start

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.times.append(time.perf_counter() - self._start)


class TinyGPT(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel

        self.model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_layer=2, n_embd=128, n_head=4,
                                                n_positions=BLOCK))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (ids,) = batch
        loss = self.model(input_ids=ids, labels=ids).loss
        self.log("loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


def run(steps: int, monitor: EnergyMonitor | None, warmup: int) -> tuple[float, float]:
    """Median step time (s) after ``warmup`` steps, and the time from fit start to the first step."""
    torch.manual_seed(0)
    data = TensorDataset(torch.randint(VOCAB, (steps * BATCH, BLOCK), generator=torch.Generator().manual_seed(0)))
    timer = StepTimer()
    callbacks: list[Callback] = [timer] + ([monitor] if monitor else [])
    trainer = Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=10,
                      callbacks=callbacks)
    trainer.fit(TinyGPT(), DataLoader(data, batch_size=BATCH))
    return statistics.median(timer.times[warmup:]), timer.first_step - timer.fit_start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--measure-power-secs", type=float, nargs="+", default=[10.0, 1.0])
    args = parser.parse_args()
    print(f"{torch.get_num_threads()} threads, {args.steps} steps per run, {args.pairs} A/B pairs per setting")
    run(args.warmup + 5, EnergyMonitor(carbon_intensity=100.0), 0)  # load CodeCarbon and probe the hardware once
    for interval in args.measure_power_secs:
        ratios, base, startup = [], [], []
        for _ in range(args.pairs):
            a, a_start = run(args.steps, None, args.warmup)
            b, b_start = run(args.steps, EnergyMonitor(carbon_intensity=100.0, measure_power_secs=interval),
                             args.warmup)
            ratios.append(b / a)
            base.append(a)
            startup.append(b_start - a_start)
        spread = sorted(ratios)
        print(f"measure_power_secs={interval:g}: step time with / without = {statistics.median(ratios):.4f} "
              f"(median of {len(ratios)} pairs; min {spread[0]:.4f}, max {spread[-1]:.4f}); "
              f"step {statistics.median(base) * 1000:.1f} ms without; "
              f"tracker start adds {statistics.median(startup) * 1000:.0f} ms before the first step")


if __name__ == "__main__":
    main()
