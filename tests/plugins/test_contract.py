"""The contract every registered plugin keeps, checked with lmforge's own conformance kit.

One case per registered plugin (of every kind, built-in or third-party) and per objective task it
supports that the kit has a fixture for; see `lmforge.testing.conformance` for the checks. A
third-party plugin that supports only tasks without a fixture is reported as skipped, with the
reason; every built-in has a fixture.
"""

from __future__ import annotations

import inspect
import re
import sys

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


def _built_ins() -> list[tuple[str, str]]:
    return [(kind, name) for kind in GROUPS for name in registry().names(kind)
            if registry().get(kind, name).dist == "lmforge"]


def test_every_built_in_has_a_case_and_none_is_skipped() -> None:
    built_ins = _built_ins()
    assert len(built_ins) == 20
    cases = {(case.values[0], case.values[1]): case for case in _cases()}
    for kind, name in built_ins:
        assert (kind, name) in cases, name
        assert not cases[(kind, name)].marks, f"{name} is skipped: {cases[(kind, name)].marks}"
    assert {case.values[2] for case in _cases()} >= {"causal_lm", "masked_lm", "sequence_classification",
                                                     "token_classification"}


@pytest.mark.parametrize(("kind", "name"), _built_ins(), ids=[name for _, name in _built_ins()])
def test_built_ins_document_their_source_and_type_their_arguments(kind: str, name: str) -> None:
    cls = registry().get(kind, name).cls
    assert (cls.__doc__ or "").strip(), f"{name} needs a docstring (its first line is shown by `lmforge plugins`)"
    assert re.search(r"\b(19|20)\d\d\b", sys.modules[cls.__module__].__doc__ or ""), \
        f"{name}'s module docstring must cite its source (authors, year)"
    for parameter in inspect.signature(cls).parameters.values():
        assert parameter.annotation is not inspect.Parameter.empty, f"{name}.{parameter.name} needs a type"


@pytest.mark.parametrize(("kind", "name", "task"), _cases())
def test_plugin_contract(kind: str, name: str, task: str, lmforge_kit: Kit) -> None:
    report = lmforge_kit.check(registry().get(kind, name).cls, tasks=[task])
    assert f"{task}: training step" in report.passed and f"{task}: state_dict round-trip" in report.passed
