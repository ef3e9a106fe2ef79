"""Random insertion, one of EDA's four operations (Wei & Zou 2019, "EDA: Easy
Data Augmentation Techniques for Boosting Performance on Text Classification
Tasks").

``n = alpha * words`` times (rounded, at least once when alpha > 0): draw a
word of the document that has a synonym, and insert one of its synonyms
(lower case) at a random position. As in EDA, up to 10 draws look for a word
with a synonym; a document without any is left unchanged. Synonyms come from
the same table as `SynonymReplacement` (bundled English table plus a user file).
"""

from __future__ import annotations

import random

from lmforge.plugins.augmenters._text import SynonymTable, WordAugmenter, check_rate, count_for

#: Draws of a random word looking for one with a synonym, per insertion (EDA's value).
MAX_DRAWS = 10


def random_insertion(words: list[str], n: int, table: SynonymTable, rng: random.Random) -> list[str]:
    """``words`` with ``n`` synonyms of its own words inserted at random positions."""
    if n <= 0 or not any(table.get(w) for w in words):
        return words
    words = list(words)
    for _ in range(n):
        for _ in range(MAX_DRAWS):
            synonyms = table.get(rng.choice(words))
            if synonyms:
                words.insert(rng.randint(0, len(words)), rng.choice(synonyms))
                break
    return words


class RandomInsertion(WordAugmenter):
    """EDA random insertion: inserts synonyms of the document's words, alpha * (number of words) times.

    Args:
        alpha: Insertions per word (``n = round(alpha * words)``, at least 1
            when alpha > 0).
        synonyms: A user synonym file: TSV (``word<TAB>syn1,syn2``, ``#``
            comments) or JSON (``{"word": ["syn1", "syn2"]}``). Its entries
            replace the bundled table's entries for the same word.
        bundled: Use the English table bundled with lmforge.
        copies: Augmented copies added per document, the original kept; 0
            rewrites each document in place.
    """

    def __init__(self, alpha: float = 0.1, synonyms: str | None = None, bundled: bool = True,
                 copies: int = 1) -> None:
        super().__init__(copies)
        check_rate("RandomInsertion", "alpha", alpha)
        self.alpha = alpha
        self.synonyms = synonyms
        self.bundled = bundled
        self._table = SynonymTable("RandomInsertion", synonyms, bundled)

    def data_fingerprint(self) -> str:
        return f"{super().data_fingerprint()}:{self._table.fingerprint}"  # the files' content, not just their names

    def edit(self, words: list[str], rng: random.Random) -> list[str]:
        return random_insertion(words, count_for(self.alpha, len(words)), self._table, rng)
