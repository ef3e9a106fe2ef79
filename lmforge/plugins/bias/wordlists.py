"""Word lists shared by the bias mitigators: attribute terms grouped by column.

An attribute list is a text file with one row of equivalent words per line,
one tab-separated column per group (``he<TAB>she``); lines starting with
``#`` are comments, and a comment ``# groups: male<TAB>female`` names the
columns. The bundled ``lmforge:bias/gender_pairs.tsv`` is one. A blocklist is
a file with one plain term or ``re:<regular expression>`` per line.

Words are matched whole and case-insensitively; a word is a run of letters,
optionally joined by apostrophes (``he's``). A trailing period in a term
(``mr.``) is dropped, since the period is punctuation in the text.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lmforge.core.data.files import BUNDLED_PREFIX, bundled_data_dir

#: A word: letters, optionally joined by straight or curly apostrophes (``he's``, ``John’s``).
WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
POSSESSIVE_SUFFIXES = ("'s", "’s")
GENDER_TERMS = "lmforge:bias/gender_pairs.tsv"


def resolve_path(value: str, key: str) -> Path:
    """A file argument: a path, or ``lmforge:<path>`` for a file bundled with lmforge."""
    path = bundled_data_dir() / value[len(BUNDLED_PREFIX):] if value.startswith(BUNDLED_PREFIX) else Path(value)
    path = path.expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{key}: file not found: {path}. Give a path, or lmforge:<path> for a bundled file.")
    return path


def file_digest(paths: Sequence[Path]) -> str:
    """A digest of the files' contents, for data-stage cache keys."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def base_word(word: str) -> tuple[str, str]:
    """Split a possessive: ``John's`` -> (``John``, ``'s``); other words -> (word, "")."""
    for suffix in POSSESSIVE_SUFFIXES:
        if word.lower().endswith(suffix) and len(word) > len(suffix):
            return word[: -len(suffix)], word[-len(suffix):]
    return word, ""


def _normalize(term: str) -> str:
    return term.strip().lower().rstrip(".")


@dataclass(frozen=True)
class AttributeTerms:
    """Attribute words by group, read from one or more tab-separated files.

    Attributes:
        groups: Group names, one per column.
        rows: The rows of equivalent words (lower case), one word per group.
        paths: The files read.
    """

    groups: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    paths: tuple[Path, ...]

    def term_groups(self, key: str) -> dict[str, int]:
        """Word -> index of its group; a word listed under two groups is an error."""
        found: dict[str, int] = {}
        for row in self.rows:
            for group, term in enumerate(row):
                if found.get(term, group) != group:
                    raise ValueError(
                        f"{key}: the word {term!r} is listed under both {self.groups[found[term]]!r} and "
                        f"{self.groups[group]!r} in {', '.join(map(str, self.paths))}; list each word under one group."
                    )
                found[term] = group
        return found


def read_attribute_terms(files: str | Sequence[str], key: str, groups: Sequence[str] | None = None) -> AttributeTerms:
    """Read attribute lists; all files must have the same number of columns.

    Args:
        files: One file or several (their rows are concatenated).
        key: The recipe key the files come from, for error messages.
        groups: Names of the columns; default: the files' ``# groups:`` line,
            else ``group0``, ``group1``, ...
    """
    paths = [resolve_path(f, key) for f in ([files] if isinstance(files, str) else files)]
    if not paths:
        raise ValueError(f"{key}: no attribute list given. Give at least one file, e.g. {GENDER_TERMS}.")
    rows: list[tuple[str, ...]] = []
    declared: tuple[str, ...] | None = None
    for path in paths:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            stripped = line.strip()
            if stripped.startswith("#"):
                header = stripped.lstrip("#").strip()
                if header.lower().startswith("groups:"):
                    names = tuple(n.strip() for n in re.split(r"[\t,]", header.split(":", 1)[1]) if n.strip())
                    declared = declared or names
                continue
            if not stripped:
                continue
            row = tuple(_normalize(t) for t in line.split("\t"))
            if len(row) < 2 or not all(row):
                raise ValueError(
                    f"{key}: {path}, line {number}: expected two or more tab-separated words, got {line!r}."
                )
            if any(not WORD.fullmatch(t) for t in row):
                raise ValueError(f"{key}: {path}, line {number}: every entry must be a single word, got {line!r}.")
            if rows and len(row) != len(rows[0]):
                raise ValueError(
                    f"{key}: {path}, line {number}: {len(row)} columns, but earlier rows have {len(rows[0])}; "
                    "every row needs one word per group."
                )
            rows.append(row)
    if not rows:
        raise ValueError(f"{key}: {', '.join(map(str, paths))} holds no terms. Give one tab-separated row per line.")
    width = len(rows[0])
    names = tuple(groups) if groups is not None else (declared or tuple(f"group{i}" for i in range(width)))
    if len(names) != width:
        raise ValueError(
            f"{key}: {len(names)} group names {list(names)} for {width} columns in {', '.join(map(str, paths))}; "
            "name each column once."
        )
    return AttributeTerms(groups=names, rows=tuple(rows), paths=tuple(paths))


def find_groups(text: str, term_groups: dict[str, int]) -> set[int]:
    """The groups whose words occur in ``text`` (possessives count: ``John's`` is ``John``)."""
    found = set()
    for match in WORD.finditer(text):
        word = match.group().lower()
        group = term_groups.get(word)
        if group is None:
            group = term_groups.get(base_word(word)[0])
        if group is not None:
            found.add(group)
    return found


def single_group(text: str, term_groups: dict[str, int]) -> int | None:
    """The one group whose words occur in ``text``; None when none or several do."""
    found = find_groups(text, term_groups)
    return next(iter(found)) if len(found) == 1 else None


@dataclass(frozen=True)
class Blocklist:
    """A compiled blocklist.

    Attributes:
        pattern: One regular expression matching any entry.
        n_terms: Plain terms (matched as whole words).
        n_patterns: ``re:`` entries.
        path: The file read.
    """

    pattern: re.Pattern[str]
    n_terms: int
    n_patterns: int
    path: Path


def read_blocklist(file: str, key: str, ignore_case: bool = True) -> Blocklist:
    """Read a blocklist: one plain term or ``re:<regex>`` per line; ``#`` starts a comment line."""
    path = resolve_path(file, key)
    parts: list[str] = []
    n_terms = n_patterns = 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if entry.startswith("re:"):
            try:
                re.compile(entry[3:])
            except re.error as exc:
                raise ValueError(
                    f"{key}: {path}, line {number}: invalid regular expression {entry[3:]!r} ({exc})."
                ) from None
            parts.append(f"(?:{entry[3:]})")
            n_patterns += 1
        else:
            # Whole words: not preceded or followed by a letter, digit or underscore.
            parts.append(rf"(?<!\w){re.escape(entry)}(?!\w)")
            n_terms += 1
    if not parts:
        raise ValueError(f"{key}: {path} holds no terms. Give one term or re:<regex> per line.")
    return Blocklist(re.compile("|".join(parts), re.IGNORECASE if ignore_case else 0), n_terms, n_patterns, path)
