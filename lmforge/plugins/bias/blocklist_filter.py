"""Blocklist filtering of training documents (as in C4; Raffel et al. 2020) and
its side effect: Dodge et al. 2021 ("Documenting Large Webtext Corpora")
found that such filters remove text about and by minority groups
disproportionately.

A document is dropped when any blocklist entry matches it (plain terms as
whole words, ``re:`` entries as regular expressions). The filter counts what
it drops, and, given attribute lists, how many documents of each group it
saw and dropped, so that a skewed drop rate shows in the run log.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import ClassVar

from lightning.pytorch.utilities import rank_zero_info

from lmforge.core.plugins import BiasMitigator, Examples, Host
from lmforge.plugins.bias.wordlists import file_digest, find_groups, read_attribute_terms, read_blocklist

NO_GROUP = "(no group)"


class BlocklistFilter(BiasMitigator):
    """Drops training documents that match a blocklist, and reports which groups lose documents.

    Args:
        blocklist: File with one term (whole word) or ``re:<regex>`` per line;
            ``lmforge:bias/blocklist.txt`` is a bundled example.
        ignore_case: Match terms and regular expressions case-insensitively.
        attribute_terms: Attribute lists (tab-separated, one column per group,
            e.g. ``lmforge:bias/gender_pairs.tsv``); when given, the report
            counts documents per group (a document counts for every group whose
            words it contains).
        groups: Names of the attribute lists' columns (default: the file's
            ``# groups:`` line).
    """

    splits: ClassVar[tuple[str, ...]] = ("train",)
    #: It matches terms in documents read as strings; token-classification rows are word lists.
    supported_objectives: ClassVar[tuple[str, ...] | None] = ("causal_lm", "masked_lm", "sequence_classification")

    def __init__(self, blocklist: str = "lmforge:bias/blocklist.txt", ignore_case: bool = True,
                 attribute_terms: list[str] | None = None, groups: list[str] | None = None) -> None:
        super().__init__()
        self.blocklist = blocklist
        self.ignore_case = ignore_case
        self.attribute_terms = list(attribute_terms) if attribute_terms else None
        self._blocklist = read_blocklist(blocklist, "BlocklistFilter.blocklist", ignore_case)
        self._terms = None
        if self.attribute_terms:
            self._terms = read_attribute_terms(self.attribute_terms, "BlocklistFilter.attribute_terms", groups)
            self._term_groups = self._terms.term_groups("BlocklistFilter.attribute_terms")
        #: Documents seen and dropped, in total and per group; filled by ``process_text``.
        self.seen: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()

    def blocked(self, text: str) -> bool:
        """Whether ``text`` matches the blocklist."""
        return self._blocklist.pattern.search(text) is not None

    def _groups_of(self, text: str) -> list[str]:
        if self._terms is None:
            return []
        found = find_groups(text, self._term_groups)
        return [self._terms.groups[g] for g in sorted(found)] or [NO_GROUP]

    def process_text(self, examples: Examples, rng: random.Random) -> Examples:
        keep = []
        for i, text in enumerate(examples["text"]):
            blocked = self.blocked(text)
            for key in ["total", *self._groups_of(text)]:
                self.seen[key] += 1
                self.dropped[key] += blocked
            if not blocked:
                keep.append(i)
        return {c: [values[i] for i in keep] for c, values in examples.items()}

    def report(self) -> str:
        """How many documents were dropped, overall and per group."""
        if not self.seen:
            return "BlocklistFilter: no documents filtered in this process (the filtered split came from the cache)."
        lines = [f"BlocklistFilter: dropped {self.dropped['total']} of {self.seen['total']} training documents "
                 f"({_rate(self.dropped['total'], self.seen['total'])}) matching {self._blocklist.path}"]
        overall = self.dropped["total"] / self.seen["total"]
        for key in sorted(k for k in self.seen if k != "total"):
            dropped, seen = self.dropped[key], self.seen[key]
            line = f"  {key}: dropped {dropped} of {seen} ({_rate(dropped, seen)}"
            if overall > 0:
                line += f", {self.dropped[key] / self.seen[key] / overall:.2f}x the overall rate"
            lines.append(line + ")")
        return "\n".join(lines)

    def setup(self, model: Host) -> None:
        # The data stage has run by now (the DataModule is set up before the model is configured).
        rank_zero_info(self.report())

    def data_fingerprint(self) -> str:
        # Only what decides which documents are kept (not the counters, which change as it runs).
        return f"{type(self).__qualname__}:{self.ignore_case}:{file_digest([self._blocklist.path])}"


def _rate(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f} %" if whole else "n/a"
