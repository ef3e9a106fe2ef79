"""Lightning callback for benchmarks/perf.py: per-step wall times of an lmforge run.

Writes ``{"start": [...], "end": [...]}`` (``time.perf_counter`` at each
``on_train_batch_start``/``on_train_batch_end``) to ``$LMFORGE_PERF_OUT`` when
training ends, plus the peak RSS of the process and the time of the first step
relative to ``$LMFORGE_PERF_T0`` (the launcher's clock, seconds since the epoch), with the process's CPU
seconds and peak RSS at that moment.
"""

from __future__ import annotations

import json
import os
import resource
import time
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback


class StepTimes(Callback):
    def __init__(self) -> None:
        self.start: list[float] = []
        self.end: list[float] = []
        self.first_step_wall: float | None = None
        self.first_step_cpu = self.first_step_rss = float("nan")

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self.first_step_wall is None:
            self.first_step_wall = time.time()
            usage = resource.getrusage(resource.RUSAGE_SELF)
            self.first_step_cpu = usage.ru_utime + usage.ru_stime  # less disturbed by other load than wall time
            self.first_step_rss = usage.ru_maxrss / 1024
        self.start.append(time.perf_counter())

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if pl_module.device.type == "cuda":  # the step is done when the GPU is (the other runners sync too)
            torch.cuda.synchronize(pl_module.device)
        self.end.append(time.perf_counter())

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        t0 = float(os.environ.get("LMFORGE_PERF_T0", "nan"))
        record = {"start": self.start, "end": self.end,
                  "first_step_s": (self.first_step_wall or float("nan")) - t0,
                  "first_step_cpu_s": self.first_step_cpu, "first_step_rss_mb": self.first_step_rss,
                  "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        with open(os.environ["LMFORGE_PERF_OUT"], "w", encoding="utf-8") as f:
            json.dump(record, f)
