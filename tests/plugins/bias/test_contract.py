"""Every registered bias mitigator: builds from defaults, documents its source, keeps text changes on train."""

from __future__ import annotations

import inspect
import re
import sys

import pytest

from lmforge.core.plugins import BiasMitigator, overrides
from lmforge.core.registry import registry

NAMES = registry().names("bias_mitigator")


def test_the_four_built_ins_are_registered() -> None:
    assert {"CounterfactualAugmentation", "BalancedSampling", "BlocklistFilter", "AdversarialDebiasing"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_mitigator_contract(name: str) -> None:
    cls = registry().get("bias_mitigator", name).cls
    plugin = cls()
    assert isinstance(plugin, BiasMitigator) and plugin.kind == "bias_mitigator"
    assert (cls.__doc__ or "").strip(), f"{name} needs a docstring (its first line is shown by `lmforge plugins`)"
    assert re.search(r"\b(19|20)\d\d\b", sys.modules[cls.__module__].__doc__ or ""), "module docstring cites its source"
    for parameter in list(inspect.signature(cls).parameters.values()):
        assert parameter.annotation is not inspect.Parameter.empty, f"{name}.{parameter.name} needs a type"
    if overrides(plugin, "process_text"):
        assert plugin.splits == ("train",)
