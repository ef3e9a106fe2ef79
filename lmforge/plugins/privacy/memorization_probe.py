"""The memorization probe: the exposure of the run's canaries at every validation (Carlini et al. 2019, "The
Secret Sharer: Evaluating and Testing Unintended Memorization in Neural Networks", Sec. 4).

`CanaryInsertion` puts canaries into the training data; this callback ranks each canary's secret among the
candidates of its format by the model's log-perplexity and logs its exposure, ``log2 |R| - log2 rank``
(`lmforge.plugins.privacy.canaries`). ``lmforge memorization`` scores a saved model the same way.
"""

from __future__ import annotations

import json
import random
import statistics
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from lmforge.plugins.privacy.canaries import Canary, Exposure, measure_exposures
from lmforge.plugins.privacy.canary_insertion import CanaryInsertion

CANARIES_FILE = "canaries.json"


def read_canaries(path: str | Path, key: str = "canaries") -> list[Canary]:
    """Canaries from a ``canaries.json`` (a list of `Canary.to_dict` objects, as `MemorizationProbe` writes)."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{key}: {file} does not exist. A run with MemorizationProbe writes {CANARIES_FILE} "
                                "into its directory.")
    try:
        return [Canary.from_dict(item) for item in json.loads(file.read_text(encoding="utf-8"))]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{key}: {file} is not a canaries file (a JSON list of objects with secret, repetitions, "
                         f"template, digits, separator and groups): {exc}") from exc


def model_canaries(module: Any) -> list[Canary]:
    """The canaries of the module's `CanaryInsertion` plugins (none when it has none)."""
    plugins = module.plugins() if hasattr(module, "plugins") else []
    return [c for p in plugins if isinstance(p, CanaryInsertion) for c in p.canaries]


def exposure_by_repetitions(canaries: Sequence[Canary], exposures: Sequence[Exposure]) -> dict[int, float]:
    """Mean exposure of the canaries inserted each number of times, by that number."""
    groups: dict[int, list[float]] = {}
    for canary, exposure in zip(canaries, exposures, strict=True):
        groups.setdefault(canary.repetitions, []).append(exposure.exposure)
    return {r: statistics.fmean(values) for r, values in sorted(groups.items())}


class MemorizationProbe(Callback):
    """Logs the exposure of the run's canaries at the end of every validation.

    Logs ``privacy/exposure/r<R>``: the mean exposure, in bits, of the canaries inserted ``R`` times (``r0``:
    control canaries never inserted, around 1 bit). A secret the model has not learnt ranks about in the
    middle of the candidates; a memorized one ranks first, with the largest exposure, ``log2`` of the number
    of candidates. `results` keeps each canary's `Exposure`. Causal LMs only; every rank scores every candidate
    (the cost: benchmarks/canary_scoring.py).

    Args:
        canaries: A ``canaries.json`` file; None: the canaries of the recipe's `CanaryInsertion`.
        exact_limit: Rank exactly, scoring every candidate, when a format has at most this many; otherwise
            extrapolate from ``samples`` candidates (the paper's skew-normal fit; needs SciPy).
        samples: Candidates scored for the extrapolated estimate.
        batch_size: Sequences per forward pass.
        seed: Seeds the sampled candidates.
    """

    def __init__(self, canaries: str | None = None, exact_limit: int = 100_000, samples: int = 10_000,
                 batch_size: int = 256, seed: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"MemorizationProbe: batch_size must be at least 1, got {batch_size}.")
        self.canaries_file = canaries
        self.canaries: list[Canary] = read_canaries(canaries, "MemorizationProbe.canaries") if canaries else []
        self.exact_limit = exact_limit
        self.samples = samples
        self.batch_size = batch_size
        self.seed = seed
        #: Each canary's exposure at the last validation.
        self.results: list[Exposure] = []
        self._warned = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not self.canaries_file:
            self.canaries = model_canaries(pl_module)
        if not self.canaries:
            raise ValueError("MemorizationProbe: no canaries to probe. Add CanaryInsertion to model.data_filters, or "
                             "give MemorizationProbe a canaries file.")
        if stage != "fit":
            return
        log_dir = trainer.log_dir  # a collective: every rank asks
        if trainer.is_global_zero and log_dir and trainer.logger is not None:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            (Path(log_dir) / CANARIES_FILE).write_text(json.dumps([c.to_dict() for c in self.canaries], indent=1),
                                                       encoding="utf-8")

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if getattr(getattr(pl_module, "objective", None), "auto_model", "") != "AutoModelForCausalLM":
            if not self._warned:
                warnings.warn("MemorizationProbe: exposure needs a causal LM; nothing is probed.", stacklevel=1)
                self._warned = True
            return
        tokenizer = pl_module.tokenizer
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self.results = measure_exposures(pl_module.backbone, tokenizer, self.canaries, self.exact_limit, self.samples,
                                         random.Random(self.seed), self.batch_size, context_token_id=start)
        for repetitions, value in exposure_by_repetitions(self.canaries, self.results).items():
            # Every rank computed the same values; syncing keeps Lightning's distributed logging consistent.
            pl_module.log(f"privacy/exposure/r{repetitions}", value, sync_dist=True)
