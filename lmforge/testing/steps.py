"""A plugin on a tiny model, for tests that check its math against a reference computation."""

from __future__ import annotations

from typing import Any

import torch

from lmforge.core.hooks import KIND_BY_NAME
from lmforge.core.plugins import Plugin, StepContext, overrides, wants_hidden_states
from lmforge.testing.conformance import KIND_ARGUMENT, Kit, default_kit
from lmforge.testing.fixtures import FIXTURES


def tiny_model(plugin: Plugin, task: str = "causal_lm", kit: Kit | None = None) -> Any:
    """A `LanguageModel` of the ``task`` fixture holding ``plugin``, its backbone built and plugins set up.

    ``plugin`` may be an objective (it replaces the fixture's) or a plugin of any other kind.
    """
    kit = kit or default_kit()
    fixture = FIXTURES[task]
    key = KIND_ARGUMENT[plugin.kind]
    if key == "objective":
        return kit.workdir.model(fixture, plugin)
    return kit.workdir.model(fixture, **{key: [plugin] if KIND_BY_NAME[plugin.kind].many else plugin})


def step_context(plugin: Plugin, task: str = "causal_lm", kit: Kit | None = None, seed: int = 0) -> StepContext:
    """What ``plugin.loss`` sees in a training step of a tiny ``task`` model: call ``plugin.loss(ctx)`` on it.

    The batch is the fixture's first training batch, prepared by the objective and passed through
    ``plugin.process_batch`` (when it has one) with a generator seeded by ``seed``; the model is in training
    mode, and the outputs hold hidden states when the plugin asks for them.
    """
    kit = kit or default_kit()
    model = tiny_model(plugin, task, kit)
    model.train()
    batch = next(iter(kit.workdir.plain_data(FIXTURES[task]).train_dataloader()))
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    batch = model.objective.prepare(batch, generator)
    if overrides(plugin, "process_batch"):
        batch = plugin.process_batch(batch, generator)
    outputs = model.backbone(**model.objective.model_inputs(batch), output_hidden_states=wants_hidden_states(plugin))
    result = model.objective.compute(outputs, batch)
    return model.step_context(batch, outputs, result)
