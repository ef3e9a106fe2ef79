"""What the text-stage augmenters share: copies vs in-place rewriting, words, the synonym table.

Text augmenters work on whitespace-separated words. A rewritten document has
its words joined by single spaces; a document the augmenter leaves unchanged
(rate 0, an empty line, no synonym found) is returned exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path
from typing import ClassVar

from lmforge.core.data.files import BUNDLED_PREFIX, bundled_data_dir
from lmforge.core.plugins import Augmenter, Examples

BUNDLED_SYNONYMS = f"{BUNDLED_PREFIX}synonyms.tsv"
_WORD = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)


class TextAugmenter(Augmenter):
    """Base of the text-stage augmenters: rewrites ``text`` with `augment`.

    ``copies: k > 0`` keeps every original document and adds k augmented copies
    of it; ``copies: 0`` rewrites each document in place. The copies of a map
    batch follow all of its originals (not each its own original) so that,
    once documents are packed into blocks, a document and its near-duplicate
    rarely share a block where the model could copy one from the other.
    Other columns (labels) are copied along with the text.
    """

    #: Text rewriting moves or drops words, so word-level labels (token classification) would no longer line up.
    supported_objectives: ClassVar[tuple[str, ...] | None] = ("causal_lm", "masked_lm", "sequence_classification")

    def __init__(self, copies: int = 1) -> None:
        super().__init__()
        if copies < 0:
            raise ValueError(f"{type(self).__name__}: copies must be >= 0 (0 rewrites in place), got {copies}.")
        self.copies = copies

    def augment(self, text: str, rng: random.Random) -> str:
        """One augmented version of ``text``, drawing only from ``rng``."""
        raise NotImplementedError

    def process_text(self, examples: Examples, rng: random.Random) -> Examples:
        if "text" not in examples:
            raise ValueError(f"{type(self).__name__}: the data has no 'text' column (columns: {sorted(examples)}).")
        texts = examples["text"]
        if self.copies == 0:
            return {**examples, "text": [self.augment(t, rng) for t in texts]}
        out = {key: list(column) * (self.copies + 1) for key, column in examples.items()}
        out["text"] = list(texts) + [self.augment(t, rng) for _ in range(self.copies) for t in texts]
        return out


class WordAugmenter(TextAugmenter):
    """A text augmenter that edits the list of words (EDA's operations)."""

    def edit(self, words: list[str], rng: random.Random) -> list[str]:
        """The edited words; may return ``words`` itself when nothing changes."""
        raise NotImplementedError

    def augment(self, text: str, rng: random.Random) -> str:
        words = text.split()
        edited = self.edit(list(words), rng) if words else words
        return text if edited == words else " ".join(edited)


def count_for(alpha: float, n_words: int) -> int:
    """EDA's number of operations: ``alpha * n_words`` rounded, at least 1 when alpha > 0."""
    if alpha <= 0.0 or n_words == 0:
        return 0
    return max(1, round(alpha * n_words))


def check_rate(owner: str, key: str, value: float, upper: float = 1.0) -> None:
    if not 0.0 <= value <= upper:
        raise ValueError(f"{owner}: {key} must be in [0, {upper:g}], got {value}.")


def split_word(word: str) -> tuple[str, str, str]:
    """``'"Quickly,'`` -> ``('"', 'Quickly', ',')``: leading punctuation, core, trailing punctuation."""
    match = _WORD.match(word)
    return match.group(1), match.group(2), match.group(3)


def match_case(replacement: str, original: str) -> str:
    """Give ``replacement`` the capitalisation of ``original`` (lower, Capitalised or UPPER)."""
    if len(original) > 1 and original.isupper():
        return replacement.upper()
    if original[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


# -- the synonym table ---------------------------------------------------------------------------


def _resolve(path: str) -> Path:
    if path.startswith(BUNDLED_PREFIX):
        return bundled_data_dir() / path[len(BUNDLED_PREFIX):]
    return Path(path).expanduser()


def read_synonyms(path: str, owner: str) -> dict[str, list[str]]:
    """Read a synonym file: TSV (``word<TAB>syn1,syn2``, ``#`` comments) or JSON (``{"word": ["syn1", ...]}``).

    Headwords are matched lower-cased.
    """
    file = _resolve(path)
    if not file.is_file():
        raise FileNotFoundError(f"{owner}: synonyms file not found: {file}. Give a .tsv or .json file.")
    text = file.read_text(encoding="utf-8")
    table: dict[str, list[str]] = {}
    if file.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{owner}: {file} is not valid JSON ({exc.msg}, line {exc.lineno}).") from None
        if not isinstance(data, dict) or not all(
            isinstance(v, list) and all(isinstance(s, str) for s in v) for v in data.values()
        ):
            raise ValueError(f'{owner}: {file} must hold one JSON object {{"word": ["synonym", ...], ...}}.')
        items = list(data.items())
    else:
        items = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            word, sep, synonyms = line.partition("\t")
            if not sep or not word.strip() or not synonyms.strip():
                raise ValueError(
                    f"{owner}: {file}, line {number}: expected 'word<TAB>synonym1,synonym2', got {line!r}."
                )
            items.append((word, synonyms.split(",")))
    for word, synonyms in items:
        cleaned = [s.strip() for s in synonyms if s.strip() and s.strip().lower() != word.strip().lower()]
        if cleaned:
            table[word.strip().lower()] = cleaned
    return table


class SynonymTable:
    """The bundled English table plus an optional user file; a user entry replaces the bundled one."""

    def __init__(self, owner: str, synonyms: str | None, bundled: bool) -> None:
        self.table: dict[str, list[str]] = read_synonyms(BUNDLED_SYNONYMS, owner) if bundled else {}
        if synonyms is not None:
            self.table.update(read_synonyms(synonyms, owner))
        if not self.table:
            raise ValueError(f"{owner}: the synonym table is empty; set bundled: true or give a synonyms file.")
        payload = json.dumps(self.table, sort_keys=True, ensure_ascii=False)
        self.fingerprint = hashlib.sha256(payload.encode()).hexdigest()[:16]

    def get(self, word: str) -> list[str]:
        """Synonyms of a word's core (punctuation stripped, any case); empty if none."""
        return self.table.get(split_word(word)[1].lower(), [])
