"""RandomSwap makes round(alpha * words) swaps of two distinct positions."""

from __future__ import annotations

import random

import pytest

from lmforge.plugins.augmenters._text import count_for
from lmforge.plugins.augmenters.random_swap import RandomSwap, random_swap

WORDS = [f"w{i}" for i in range(1000)]


def test_swap_count_follows_eda():
    assert count_for(0.1, 1000) == 100
    assert count_for(0.29, 100) == 29  # rounded, not truncated (0.29 * 100 = 28.999...)
    assert count_for(0.1, 3) == 1  # at least one operation when alpha > 0
    assert count_for(0.0, 50) == 0


@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_moves_about_two_words_per_swap(alpha):
    out = random_swap(WORDS, count_for(alpha, len(WORDS)), random.Random(0))
    assert sorted(out) == sorted(WORDS)  # the same words
    moved = sum(a != b for a, b in zip(out, WORDS))
    # Each swap moves two words; a word swapped twice may land back, so slightly fewer.
    assert 2 * alpha * len(WORDS) * 0.85 <= moved <= 2 * alpha * len(WORDS)


def test_one_word_cannot_be_swapped():
    assert RandomSwap(alpha=0.5, copies=0).process_text({"text": ["alone"]}, random.Random(0))["text"] == ["alone"]
