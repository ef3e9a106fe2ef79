"""``lmforge memorization MODEL``: the exposure of the canaries a causal LM was trained with (Carlini et al.
2019, "The Secret Sharer"), as `MemorizationProbe` logs it during training.

MODEL is an lmforge checkpoint, whose `CanaryInsertion` state holds the canaries, or a local Hugging Face
model directory (``lmforge export``), given the run's ``canaries.json`` with ``--canaries``.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import torch

from lmforge.cli.bias_eval import load_model
from lmforge.core.checkpoint import load_checkpoint
from lmforge.plugins.privacy.canaries import Canary, Exposure, measure_exposures
from lmforge.plugins.privacy.memorization_probe import CANARIES_FILE, exposure_by_repetitions, read_canaries


def checkpoint_canaries(path: str | Path) -> list[Canary]:
    """The canaries kept in a checkpoint's model state (`CanaryInsertion`'s extra state); none if it has none."""
    state = load_checkpoint(path).get("state_dict", {})
    found: list[Canary] = []
    for key, value in state.items():
        if key.endswith("_extra_state") and isinstance(value, dict) and "canaries" in value:
            found += [Canary.from_dict(c) for c in value["canaries"]]
    return found


def find_canaries(model: str, canaries_file: str | None) -> list[Canary]:
    """``--canaries``, else the checkpoint's own, else an error that says where to find them."""
    if canaries_file:
        return read_canaries(canaries_file, "--canaries")
    if Path(model).is_file():
        found = checkpoint_canaries(model)
        if found:
            return found
        raise ValueError(f"{model}: the checkpoint holds no canaries (its recipe had no CanaryInsertion); pass "
                         f"--canaries FILE.")
    raise ValueError(f"{model} is a model directory: pass the canaries it was trained with, --canaries "
                     f"runs/<recipe>/version_N/{CANARIES_FILE}.")


def score(model: Any, tokenizer: Any, canaries: list[Canary], exact_limit: int, samples: int, seed: int,
          batch_size: int) -> list[Exposure]:
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return measure_exposures(model, tokenizer, canaries, exact_limit, samples, random.Random(seed), batch_size,
                             context_token_id=start)


def format_table(canaries: list[Canary], exposures: list[Exposure]) -> str:
    header = f"{'repetitions':>11}{'exposure':>10}{'rank':>12}{'of':>12}  {'method':<13}canary"
    lines = [header, "-" * len(header)]
    for canary, e in zip(canaries, exposures):
        lines.append(f"{canary.repetitions:>11}{e.exposure:>10.2f}{e.rank:>12.0f}{e.space_size:>12}  {e.method:<13}"
                     f"{canary.text}")
    means = exposure_by_repetitions(canaries, exposures)
    best = max(math.log2(e.space_size) for e in exposures)
    lines += ["", "mean exposure (bits) by repetitions: " + ", ".join(f"{r}x {v:.2f}" for r, v in means.items())
              + f"; at most {best:.2f} (memorized), about 1 by chance"]
    return "\n".join(lines)


def run(model_path: str, canaries_file: str | None, exact_limit: int, samples: int, seed: int, batch_size: int,
        device: str) -> str:
    """Load the model, find its canaries and return the table that ``lmforge memorization`` prints."""
    canaries = find_canaries(model_path, canaries_file)
    model, tokenizer, _ = load_model(model_path, "causal")
    model.to(torch.device(device))
    exposures = score(model, tokenizer, canaries, exact_limit, samples, seed, batch_size)
    return f"{model_path}: exposure of {len(canaries)} canaries\n" + format_table(canaries, exposures)
