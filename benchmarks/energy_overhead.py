"""Overhead of the EnergyMonitor callback (CodeCarbon, offline) on training step time.

Runs short Lightning trainings of a quickstart-sized GPT-2 (2 layers, 128 wide, from a config) on random
tokens, on CPU, alternately without and with the monitor (A B A B ...), and reports the median over
pairs of the ratio of median step times (B / A), for CodeCarbon's sampling every ``--measure-power-secs``.
Also reports what starting the tracker costs (once per run, before the first step).

On a shared, loaded machine step times swing too much for the A/B ratio to resolve a small overhead, so
the cost is also measured directly, independent of other load: the CPU time the tracker's background
thread spends per power sample (the process idles while the tracker runs) and the time of the callback's
per-step hook.

    python benchmarks/energy_overhead.py [--pairs 6] [--steps 150] [--measure-power-secs 10 1]
    python benchmarks/energy_overhead.py --direct-only
"""

from __future__ import annotations

import argparse
import resource
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


def direct_cost(seconds: float, interval: float) -> None:
    """CPU time of the tracker's background sampling, and of the per-step hook, measured on their own."""
    from types import SimpleNamespace

    from codecarbon import OfflineEmissionsTracker

    tracker = OfflineEmissionsTracker(measure_power_secs=interval, force_carbon_intensity_g_co2e_kwh=100.0,
                                      output_methods=[], api_call_interval=1, log_level="error",
                                      tracking_mode="process", allow_multiple_runs=True)
    tracker.start()
    time.sleep(interval)  # past the start-up probe
    cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    time.sleep(seconds)
    cpu1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    tracker.stop()
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    samples = (wall1 - wall0) / interval
    print(f"background sampling every {interval:g} s: {cpu / samples * 1000:.1f} ms CPU per sample, "
          f"{100 * cpu / (wall1 - wall0):.3f} % of one core")

    monitor = EnergyMonitor(carbon_intensity=100.0)
    trainer = SimpleNamespace(global_rank=0, global_step=1, log_every_n_steps=50, loggers=[])
    n = 100_000
    t0 = time.perf_counter()
    for _ in range(n):
        monitor.on_train_batch_end(trainer, None, None, None, 0)  # type: ignore[arg-type]
    print(f"on_train_batch_end (not a logging step): {(time.perf_counter() - t0) / n * 1e6:.2f} us per step")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--measure-power-secs", type=float, nargs="+", default=[10.0, 1.0])
    parser.add_argument("--direct-only", action="store_true", help="only the direct measurement of the cost")
    parser.add_argument("--direct-seconds", type=float, default=20.0)
    args = parser.parse_args()
    for interval in args.measure_power_secs:
        direct_cost(args.direct_seconds, interval)
    if args.direct_only:
        return
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
