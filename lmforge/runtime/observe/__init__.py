"""Observability: what a run records besides its loss, for W&B and for runs without it.

- `RunConfig`: the resolved recipe, versions, plugins and data fingerprints as the
  run's config (the CLI's config callback; also stores the W&B run id in checkpoints).
- `TokenThroughput`: tokens/s, FLOPs/s and MFU (Lightning's ThroughputMonitor).
- `ValidationSamples`: generations or masked-token predictions at each validation.
- `EnergyMonitor`: energy (kWh), emissions (CO2-eq) and power per device kind, with CodeCarbon offline.
- `InstructionEval`: exact match of greedy answers to held-out instructions, and sample
  answers, at each validation (instruction tuning).
- `lmforge.runtime.observe.wandb`: W&B logger names, tags, resume and offline fallback.
- `lmforge.cli.plot`: ``lmforge plot``, PNG charts of runs' ``metrics.csv``.

Loss terms, metrics and the gradient norm are logged by `LanguageModel` itself
and the learning rate by Lightning's ``LearningRateMonitor``.

The callbacks load on first use, so that ``lmforge plot`` does not import Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"RunConfig": "run_config", "TokenThroughput": "throughput", "ValidationSamples": "samples",
            "EnergyMonitor": "energy", "InstructionEval": "instruction_eval"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
