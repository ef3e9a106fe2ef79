"""Word dropout: drop each word of a training document with probability p
(Iyyer et al. 2015, "Deep Unordered Composition Rivals Syntactic Methods for
Text Classification"), or replace it with a placeholder such as ``<unk>``
(Bowman et al. 2016, "Generating Sentences from a Continuous Space").

Documents are rewritten in place (no copies), on the training split only. A
document whose every word would be dropped is kept as it was, so no training
document becomes empty.
"""

from __future__ import annotations

import random
from typing import ClassVar

from lmforge.core.plugins import Augmenter, Examples


def word_dropout(words: list[str], p: float, rng: random.Random, replacement: str | None = None) -> list[str]:
    """``words`` with each one dropped (``replacement`` None) or replaced, independently, with probability ``p``.

    Returns ``words`` unchanged when every word would be dropped.
    """
    if p <= 0.0 or not words:
        return words
    hit = [rng.random() < p for _ in words]
    if replacement is not None:
        return [replacement if h else w for w, h in zip(words, hit)]
    kept = [w for w, h in zip(words, hit) if not h]
    return kept if kept else words


class WordDropout(Augmenter):
    """Word dropout: drops (or replaces with a placeholder) each word of a training document with probability p.

    Args:
        p: Probability of dropping each word.
        replacement: A placeholder that takes a dropped word's place (e.g. ``<unk>``); None removes the word.
    """

    #: Synonym replacement looks words up; it must see them before they are dropped.
    runs_after: ClassVar[tuple[str, ...]] = ("SynonymReplacement",)

    def __init__(self, p: float = 0.1, replacement: str | None = None) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"WordDropout: p must be in [0, 1], got {p}.")
        if replacement is not None and (not replacement or any(c.isspace() for c in replacement)):
            raise ValueError(f"WordDropout: replacement must be one word without spaces, got {replacement!r}.")
        self.p = p
        self.replacement = replacement

    def process_text(self, examples: Examples, rng: random.Random) -> Examples:
        texts = []
        for text in examples["text"]:
            words = text.split()
            dropped = word_dropout(words, self.p, rng, self.replacement)
            texts.append(text if dropped == words else " ".join(dropped))
        return {**examples, "text": texts}
