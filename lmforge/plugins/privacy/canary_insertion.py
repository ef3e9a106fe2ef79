"""Canary insertion: random secrets of a fixed format put into the training data a given number of times, so
that a model's memorization can be measured (Carlini et al. 2019, "The Secret Sharer", Sec. 4; the exposure
is `lmforge.plugins.privacy.canaries` and the `MemorizationProbe` callback).

The plugin is a data filter ordered before every other data filter, on the training split only. A canary
stands for a secret in the corpus as it was collected, so it must be in the text when the filters run: then
the exposure measures what the whole data pipeline lets the model memorize, and a redaction filter that
recognizes the canary's format (a phone number, for `PIIRedaction`) removes it like any real one. Inserted
after the filters, the canaries would measure the model trained on secrets no filter ever saw. It is not an
augmenter because augmenters run after data filters and bias mitigators (docs/privacy.md says more).
"""

from __future__ import annotations

import os
import random
from typing import Any, ClassVar

from lmforge.core.plugins import DataFilter, Examples
from lmforge.plugins.privacy.canaries import Canary, CanaryFormat, insert_canaries, make_canaries


class CanaryInsertion(DataFilter):
    """Inserts random secrets into the training documents, to measure memorization (Carlini et al. 2019).

    ``canaries`` random secrets for each entry of ``repetitions``, each secret added that many times as a
    document of its own.

    The secrets are drawn when the plugin is built, from ``seed``, and kept in the model's state (checkpoints),
    where `MemorizationProbe` and ``lmforge memorization`` find them. ``data_report`` gives the number of
    canaries and of copies inserted.

    Args:
        repetitions: How many times each group of canaries is inserted; one group per entry (``[1, 4, 16]``).
            0 adds a control canary that is never inserted: its exposure is what chance gives.
        canaries: Canaries per entry of ``repetitions``.
        template: The canary sentence; ``{secret}`` marks the secret.
        digits: Digits of the secret; the candidate space holds ``10 ** digits`` secrets.
        separator: Between digits, or between ``groups``.
        groups: Digits per group, adding up to ``digits`` (``[3, 4]``: "555 2671"); None: each digit alone.
        seed: Draws the secrets; None: the run's seed (``seed_everything``).
    """

    splits: ClassVar[tuple[str, ...]] = ("train",)
    # Exposure ranks secrets by a causal LM's log-perplexity; a masked LM has none.
    supported_objectives: ClassVar[tuple[str, ...] | None] = ("causal_lm",)
    # Before every other data filter: the canaries must be in the text that the filters see (module docstring).
    runs_before: ClassVar[tuple[str, ...]] = ("DataFilter",)

    def __init__(self, repetitions: list[int] | None = None, canaries: int = 1,
                 template: str = "my secret code is {secret}", digits: int = 6, separator: str = " ",
                 groups: list[int] | None = None, seed: int | None = None) -> None:
        super().__init__()
        repetitions = [1, 4, 16] if repetitions is None else list(repetitions)
        if not repetitions or any(r < 0 for r in repetitions):
            raise ValueError(f"CanaryInsertion: repetitions must be a non-empty list of counts >= 0, got {repetitions}.")
        if canaries < 1:
            raise ValueError(f"CanaryInsertion: canaries must be at least 1, got {canaries}.")
        self.repetitions = repetitions
        self.per_repetition = canaries
        self.format = CanaryFormat(template, digits, separator, tuple(groups) if groups is not None else None)
        self.seed = seed
        run_seed = seed if seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        self.canaries: list[Canary] = make_canaries([r for r in repetitions for _ in range(canaries)], self.format,
                                                    random.Random(f"canaries:{run_seed}"))
        self._inserted = False
        self._copies = 0

    def process_text(self, examples: Examples, rng: random.Random, split: str = "train") -> Examples:
        if self._inserted:  # every copy goes into the pass's first batch; the sampler shuffles blocks anyway
            return examples
        self._inserted = True
        texts = examples["text"]
        marker = object()  # where the original rows go, so that their other columns follow them
        merged = insert_canaries([marker] * len(texts), self.canaries, rng)  # type: ignore[list-item]
        self._copies += len(merged) - len(texts)
        rows = iter(range(len(texts)))
        order = [next(rows) if item is marker else None for item in merged]
        out: Examples = {}
        for column, values in examples.items():
            if column == "text":
                out[column] = [texts[i] if i is not None else item for i, item in zip(order, merged)]
            else:  # a canary row has no value in the other columns
                out[column] = [values[i] if i is not None else None for i in order]
        return out

    def data_report(self) -> dict[str, float]:
        report = {"canaries": float(len([c for c in self.canaries if c.repetitions])), "copies": float(self._copies)}
        self._inserted, self._copies = False, 0  # the next pass (another split, or another run) starts afresh
        return report

    def data_fingerprint(self) -> str:
        return super().data_fingerprint() + repr([c.to_dict() for c in self.canaries])

    def get_extra_state(self) -> dict[str, Any]:
        return {"canaries": [c.to_dict() for c in self.canaries]}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.canaries = [Canary.from_dict(c) for c in state["canaries"]]
