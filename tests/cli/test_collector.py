"""The garbage collector's pause during start-up (lmforge/cli/collector.py); the journeys check it in a real run
(tests/journeys/test_starting_points.py: on, with start-up frozen, at the first training batch)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from lmforge.cli import collector


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    yield
    gc.unfreeze()
    gc.enable()


def test_paused_until_resume_then_frozen_and_handed_back() -> None:
    with collector.paused_during_startup():
        assert not gc.isenabled()
        collector.resume()
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0  # what start-up made is out of the collector's walks
        collector.resume()  # a second call changes nothing
        assert gc.isenabled()
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_turned_back_on_without_resume_even_after_an_error() -> None:
    with pytest.raises(RuntimeError), collector.paused_during_startup():
        assert not gc.isenabled()
        raise RuntimeError("the recipe failed to parse")
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_caller_that_turned_it_off_keeps_it_off() -> None:
    gc.disable()
    with collector.paused_during_startup():
        collector.resume()
        assert not gc.isenabled() and gc.get_freeze_count() == 0
    assert not gc.isenabled()


def test_cycles_made_during_the_pause_are_collected_after_it() -> None:
    class Node:
        pass

    with collector.paused_during_startup():
        node = Node()
        node.self = node  # a reference cycle: reference counting alone never frees it
        count = sum(isinstance(o, Node) for o in gc.get_objects())
        del node
    assert count == 1
    gc.collect()
    assert not any(isinstance(o, Node) for o in gc.get_objects())


def test_garbage_from_before_the_command_is_collected_when_the_pause_starts() -> None:
    class Stale:  # a class of a module a caller reloaded: garbage, yet in its base's __subclasses__()
        pass

    Stale.self = Stale  # a reference cycle
    del Stale
    with collector.paused_during_startup():
        assert not any(getattr(c, "__name__", "") == "Stale" for c in object.__subclasses__())
