"""The scale tests write their own small corpora with the suite's corpus writer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import tiny


@pytest.fixture
def write_corpus() -> Callable[..., Path]:
    """``tiny.write_corpus(path, n_docs, seed)``."""
    return tiny.write_corpus
