"""RandomDeletion deletes about a share p of the words, keeping the rest in order."""

from __future__ import annotations

import random

import pytest

from lmforge.plugins.augmenters.random_deletion import RandomDeletion, random_deletion

WORDS = [f"w{i}" for i in range(4000)]


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_deletes_about_p_of_the_words_in_order(p):
    out = random_deletion(WORDS, p, random.Random(0))
    assert len(WORDS) - len(out) == pytest.approx(p * len(WORDS), abs=0.025 * len(WORDS))
    assert out == [w for w in WORDS if w in set(out)]  # a subsequence: order kept


def test_never_empties_a_document():
    for seed in range(20):
        assert len(random_deletion(["only", "two"], 0.999, random.Random(seed))) >= 1


def test_rewritten_text_joins_words_with_single_spaces():
    out = RandomDeletion(p=0.5, copies=0).process_text({"text": ["a  b\tc d e f g h"]}, random.Random(3))["text"][0]
    assert "  " not in out and "\t" not in out and set(out.split()) <= set("abcdefgh")
