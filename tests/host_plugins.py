"""Test-local plugins for the host's checks (metadata, order, hook failures); importable by dotted path
(``host_plugins.TagOnly``) so recipes on the command line can name them."""

from __future__ import annotations

from typing import ClassVar

import torch

from lmforge.core.plugins import Augmenter, BiasMitigator, Distiller, Regularizer


class TagOnly(Regularizer):
    """Works with token classification only."""

    supported_objectives: ClassVar[tuple[str, ...] | None] = ("token_classification",)


class CausalOnly(Regularizer):
    """Works with CausalLM (by class name)."""

    supported_objectives: ClassVar[tuple[str, ...] | None] = ("CausalLM",)


class NeedsTeacher(Regularizer):
    """Reads the distiller's teacher."""

    requires: ClassVar[frozenset[str]] = frozenset({"teacher"})


class NeedsLabels(Regularizer):
    """Needs labeled examples."""

    requires: ClassVar[frozenset[str]] = frozenset({"labels"})


class NeedsCounts(Regularizer):
    """Needs something only a plugin provides."""

    requires: ClassVar[frozenset[str]] = frozenset({"token_counts"})


class CountsTokens(Augmenter):
    """Provides token_counts."""

    provides: ClassVar[frozenset[str]] = frozenset({"token_counts"})


class NeedsHidden(Regularizer):
    """Asks for hidden states through ``requires``; records whether it got them."""

    requires: ClassVar[frozenset[str]] = frozenset({"hidden_states"})

    def __init__(self) -> None:
        super().__init__()
        self.saw_hidden: list[bool] = []

    def loss(self, ctx):
        self.saw_hidden.append(getattr(ctx.outputs, "hidden_states", None) is not None)
        return None


class SomeDistiller(Distiller):
    """A distiller without a teacher (provides "teacher" as every distiller does)."""


class NoDropout(Regularizer):
    """Refuses to share a recipe with R-Drop."""

    conflicts_with: ClassVar[tuple[str, ...]] = ("RDrop",)


# -- order: a filter that must run before a rewrite ---------------------------------------------------


class DropDogs(BiasMitigator):
    """Drops training documents that mention a dog."""

    def process_text(self, examples, rng):
        keep = [i for i, t in enumerate(examples["text"]) if "dog" not in t.split()]
        return {k: [v[i] for i in keep] for k, v in examples.items()}


class CatsToDogs(BiasMitigator):
    """Adds a copy of each document with 'cat' replaced by 'dog'; must see the filtered data."""

    runs_after: ClassVar[tuple[str, ...]] = ("DropDogs",)

    def process_text(self, examples, rng):
        swapped = [" ".join("dog" if w == "cat" else w for w in t.split()) for t in examples["text"]]
        return {"text": examples["text"] + swapped}


class First(Regularizer):
    runs_before: ClassVar[tuple[str, ...]] = ("Second",)


class Second(Regularizer):
    runs_before: ClassVar[tuple[str, ...]] = ("First",)


# -- hooks that fail ----------------------------------------------------------------------------------


class Boom(Regularizer):
    """Raises ``ValueError("boom")`` in the hook named by ``at`` (from its ``after``-th call on)."""

    def __init__(self, at: str = "loss", after: int = 0) -> None:
        super().__init__()
        self.at, self.after, self.calls = at, after, 0

    def _maybe(self, hook: str) -> None:
        if hook == self.at:
            self.calls += 1
            if self.calls > self.after:
                raise ValueError(f"boom in {hook}")

    def setup(self, model):
        self._maybe("setup")

    def process_batch(self, batch, generator):
        self._maybe("process_batch")
        return batch

    def loss(self, ctx):
        self._maybe("loss")
        return ctx.objective_loss * 0.0


class BoomText(BiasMitigator):
    """Raises a KeyError in process_text."""

    def process_text(self, examples, rng):
        raise KeyError("no such column")


class BoomWeights(BiasMitigator):
    """Raises an OSError in sample_weights."""

    def sample_weights(self, examples):
        raise FileNotFoundError("weights.csv")


# -- terms that go non-finite, one per kind that has a loss term ---------------------------------------


class NanAfter(Regularizer):
    """A loss term that turns NaN from its ``after``-th call on (``after`` calls are finite)."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after, self.calls = after, 0

    def loss(self, ctx):
        self.calls += 1
        return ctx.objective_loss * (float("nan") if self.calls > self.after else 0.0)


def nan_from_step(ctx, start: int, once: bool) -> torch.Tensor:
    """0 times the objective's loss, or NaN from optimizer step ``start`` on (at ``start`` only with ``once``)."""
    bad = ctx.step == start if once else ctx.step >= start
    return ctx.objective_loss * (float("nan") if bad else 0.0)


class NanRegularizer(Regularizer):
    """A regularizer term that is NaN from optimizer step ``start`` on, or at ``start`` only with ``once``."""

    def __init__(self, start: int = 2, once: bool = False) -> None:
        super().__init__()
        self.start, self.once = start, once

    def loss(self, ctx):
        return nan_from_step(ctx, self.start, self.once)


class NanMitigator(BiasMitigator):
    """A bias mitigator's term that is NaN from optimizer step ``start`` on."""

    def __init__(self, start: int = 2) -> None:
        super().__init__()
        self.start = start

    def loss(self, ctx):
        return nan_from_step(ctx, self.start, once=False)


class NanDistiller(Distiller):
    """A distiller with two terms, ``kl`` NaN from optimizer step ``start`` on and ``hidden`` always 0."""

    def __init__(self, start: int = 2) -> None:
        super().__init__()
        self.start = start

    def loss(self, ctx):
        return {"kl": nan_from_step(ctx, self.start, once=False), "hidden": ctx.objective_loss * 0.0}


class Vector(Regularizer):
    def loss(self, ctx):
        return torch.ones(3)
