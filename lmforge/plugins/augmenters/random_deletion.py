"""Random deletion, one of EDA's four operations (Wei & Zou 2019, "EDA: Easy Data
Augmentation Techniques for Boosting Performance on Text Classification Tasks").

Each word is deleted independently with probability ``p``; if every word of a
document would go, one of them, drawn at random, is kept (as in EDA).
"""

from __future__ import annotations

import random

from lmforge.plugins.augmenters._text import WordAugmenter, check_rate


def random_deletion(words: list[str], p: float, rng: random.Random) -> list[str]:
    """``words`` with each one deleted with probability ``p``; never empty unless ``words`` is."""
    if p <= 0.0 or not words:
        return words
    kept = [w for w in words if rng.random() >= p]
    return kept if kept else [rng.choice(words)]


class RandomDeletion(WordAugmenter):
    """EDA random deletion: drops each word with probability p.

    Args:
        p: Probability of deleting each word.
        copies: Augmented copies added per document, the original kept; 0
            rewrites each document in place.
    """

    def __init__(self, p: float = 0.1, copies: int = 1) -> None:
        super().__init__(copies)
        check_rate("RandomDeletion", "p", p)
        self.p = p

    def edit(self, words: list[str], rng: random.Random) -> list[str]:
        return random_deletion(words, self.p, rng)
