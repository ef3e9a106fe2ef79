"""Random swap, one of EDA's four operations (Wei & Zou 2019, "EDA: Easy Data
Augmentation Techniques for Boosting Performance on Text Classification Tasks").

``n = alpha * words`` times (rounded, at least once when alpha > 0), two
distinct positions are drawn and their words swapped, so a swap moves two words
and about ``2 * alpha`` of the words end up in a new place.
"""

from __future__ import annotations

import random

from lmforge.plugins.augmenters._text import WordAugmenter, check_rate, count_for


def random_swap(words: list[str], n: int, rng: random.Random) -> list[str]:
    """``words`` after ``n`` swaps of two distinct, randomly drawn positions."""
    if len(words) < 2:
        return words
    words = list(words)
    for _ in range(n):
        i, j = rng.sample(range(len(words)), 2)
        words[i], words[j] = words[j], words[i]
    return words


class RandomSwap(WordAugmenter):
    """EDA random swap: swaps two random words, alpha * (number of words) times.

    Args:
        alpha: Swaps per word (``n = round(alpha * words)``, at least 1 when
            alpha > 0).
        copies: Augmented copies added per document, the original kept; 0
            rewrites each document in place.
    """

    def __init__(self, alpha: float = 0.1, copies: int = 1) -> None:
        super().__init__(copies)
        check_rate("RandomSwap", "alpha", alpha)
        self.alpha = alpha

    def edit(self, words: list[str], rng: random.Random) -> list[str]:
        return random_swap(words, count_for(self.alpha, len(words)), rng)
