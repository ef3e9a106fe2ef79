"""Tiny models run faster on one thread than on two contended ones (the shared ``one_thread`` fixture)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    pass
