"""The contract every registered plugin keeps, checked with lmforge's own conformance kit.

One case per registered plugin (of every kind, built-in or third-party) and per objective task it
supports that the kit has a fixture for; see `lmforge.testing.conformance` for the checks. A plugin
that supports only tasks without a fixture is reported as skipped, with the reason.
"""

from __future__ import annotations

import pytest

from lmforge.core.registry import GROUPS, registry
from lmforge.testing import Kit, MissingFixture, default_kit


def _cases() -> list:
    cases = []
    for kind in GROUPS:
        for name in registry().names(kind):
            cls = registry().get(kind, name).cls
            try:
                tasks = default_kit().tasks_for(cls)
            except MissingFixture as exc:
                cases.append(pytest.param(kind, name, None, id=name, marks=pytest.mark.skip(reason=str(exc))))
                continue
            cases += [pytest.param(kind, name, task, id=f"{name}-{task}") for task in tasks]
    return cases


def test_every_kind_has_a_case() -> None:
    kinds = {case.values[0] for case in _cases()}
    assert {"objective", "regularizer", "augmenter"} <= kinds


@pytest.mark.parametrize(("kind", "name", "task"), _cases())
def test_plugin_contract(kind: str, name: str, task: str, lmforge_kit: Kit) -> None:
    report = lmforge_kit.check(registry().get(kind, name).cls, tasks=[task])
    assert f"{task}: training step" in report.passed and f"{task}: state_dict round-trip" in report.passed
