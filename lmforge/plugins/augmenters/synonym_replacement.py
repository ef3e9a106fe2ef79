"""Synonym replacement, one of EDA's four operations (Wei & Zou 2019, "EDA: Easy
Data Augmentation Techniques for Boosting Performance on Text Classification
Tasks").

``n = alpha * words`` (rounded, at least 1 when alpha > 0) distinct positions
whose word has a synonym are drawn, and each word is replaced by one of its
synonyms, drawn at random. EDA takes synonyms from WordNet; lmforge uses a
table instead (no download): a small hand-written English table bundled with
lmforge (``lmforge/data/synonyms.tsv``) plus an optional user file. Words are
looked up without their punctuation and in lower case; the replacement keeps
the punctuation and the capitalisation (``"Happy,"`` -> ``"Glad,"``).
"""

from __future__ import annotations

import random

from lmforge.plugins.augmenters._text import SynonymTable, WordAugmenter, check_rate, count_for, match_case, split_word


def replace_word(word: str, synonym: str) -> str:
    """``word`` with its core replaced by ``synonym``, keeping punctuation and capitalisation."""
    prefix, core, suffix = split_word(word)
    return prefix + match_case(synonym, core) + suffix


def synonym_replacement(words: list[str], n: int, table: SynonymTable, rng: random.Random) -> list[str]:
    """``words`` with up to ``n`` of the ones that have synonyms replaced by a random synonym."""
    candidates = [i for i, w in enumerate(words) if table.get(w)]
    if n <= 0 or not candidates:
        return words
    words = list(words)
    for i in rng.sample(candidates, min(n, len(candidates))):
        words[i] = replace_word(words[i], rng.choice(table.get(words[i])))
    return words


class SynonymReplacement(WordAugmenter):
    """EDA synonym replacement: replaces alpha * (number of words) words by synonyms from a table.

    Args:
        alpha: Share of the words replaced (``n = round(alpha * words)``, at
            least 1 when alpha > 0; fewer when fewer words have synonyms).
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
        check_rate("SynonymReplacement", "alpha", alpha)
        self.alpha = alpha
        self.synonyms = synonyms
        self.bundled = bundled
        self._table = SynonymTable("SynonymReplacement", synonyms, bundled)

    def data_fingerprint(self) -> str:
        return f"{super().data_fingerprint()}:{self._table.fingerprint}"  # the files' content, not just their names

    def edit(self, words: list[str], rng: random.Random) -> list[str]:
        return synonym_replacement(words, count_for(self.alpha, len(words)), self._table, rng)
