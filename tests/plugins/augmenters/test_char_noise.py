"""CharNoise hits about a share p of the letters with a keyboard typo, a drop or a swap."""

from __future__ import annotations

import random

import pytest

from lmforge.plugins.augmenters.char_noise import KEYBOARD_NEIGHBOURS, char_noise

TEXT = " ".join(["Typing quickly on a keyboard makes errors"] * 200)
LETTERS = sum(c.isalpha() for c in TEXT)


def test_typos_replace_about_p_of_the_letters_by_keyboard_neighbours():
    out = char_noise(TEXT, 0.1, ("typo",), random.Random(0))
    assert len(out) == len(TEXT)
    changed = [(a, b) for a, b in zip(TEXT, out) if a != b]
    assert len(changed) == pytest.approx(0.1 * LETTERS, rel=0.1)
    assert all(b.lower() in KEYBOARD_NEIGHBOURS[a.lower()] and a.isupper() == b.isupper() for a, b in changed)


def test_drops_remove_about_p_of_the_letters_and_keep_the_rest():
    out = char_noise(TEXT, 0.1, ("drop",), random.Random(0))
    assert len(TEXT) - len(out) == pytest.approx(0.1 * LETTERS, rel=0.1)
    assert out.count(" ") == TEXT.count(" ")  # word boundaries stay


def test_swaps_exchange_neighbouring_letters():
    out = char_noise(TEXT, 0.1, ("swap",), random.Random(0))
    assert sorted(out) == sorted(TEXT) and out.split(" ")[0] != "" and len(out.split()) == len(TEXT.split())
    swaps = sum(a != b for a, b in zip(TEXT, out)) / 2  # each swap changes two positions
    # Only a letter followed by a different letter can swap; a swapped pair is not hit again.
    swappable = sum(a.isalpha() and b.isalpha() and a != b for a, b in zip(TEXT, TEXT[1:]))
    assert swaps == pytest.approx(0.1 * swappable, rel=0.15)


def test_non_ascii_letters_are_dropped_or_swapped_never_typed():
    text = "naïve café über straße"
    for seed in range(10):
        out = char_noise(text, 0.9, ("typo",), random.Random(seed))
        assert all(a == b for a, b in zip(text, out) if not a.isascii())
