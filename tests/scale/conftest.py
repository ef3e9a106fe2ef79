"""The scale tests write their own small corpora with the suite's corpus writer."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("_lmforge_tests_root", Path(__file__).parents[1] / "conftest.py")
_root = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root)


@pytest.fixture
def write_corpus() -> Callable[..., Path]:
    """``tests/conftest.py``'s ``write_corpus(path, n_docs, seed)``."""
    return _root.write_corpus
