"""Balanced sampling by reweighing (Kamiran & Calders 2012, "Data preprocessing
techniques for classification without discrimination").

Each training document with a protected attribute value s and a label y is
drawn with weight w(s, y) = P(s) P(y) / P(s, y), which makes s and y
independent in the weighted data. Without a label, groups are balanced:
w(s) = n / (K n_s) for K groups, so each group carries the same total weight.
Probabilities are counts over the documents that have a group; documents
without one (no attribute word, words of several groups, or an empty
attribute cell) keep weight 1. The attribute comes from a column or from the
attribute words found in the text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, ClassVar

from lightning.pytorch.utilities import rank_zero_info

from lmforge.core.plugins import BiasMitigator
from lmforge.plugins.bias.wordlists import GENDER_TERMS, file_digest, read_attribute_terms, single_group

if TYPE_CHECKING:
    import datasets



def reweighing_weights(groups: Sequence[Hashable | None], labels: Sequence[Hashable] | None = None) -> list[float]:
    """Kamiran & Calders weights, or plain group balancing when ``labels`` is None.

    Args:
        groups: The protected attribute of each example; None for examples
            without one (weight 1, not counted).
        labels: The label of each example, or None.

    Returns:
        One weight per example.
    """
    kept = [i for i, s in enumerate(groups) if s is not None and (labels is None or labels[i] is not None)]
    n = len(kept)
    weights = [1.0] * len(groups)
    if n == 0:
        return weights
    n_s = Counter(groups[i] for i in kept)
    if labels is None:
        for i in kept:
            weights[i] = n / (len(n_s) * n_s[groups[i]])
        return weights
    n_y = Counter(labels[i] for i in kept)
    n_sy = Counter((groups[i], labels[i]) for i in kept)
    for i in kept:
        s, y = groups[i], labels[i]
        weights[i] = (n_s[s] / n) * (n_y[y] / n) / (n_sy[(s, y)] / n)
    return weights


class BalancedSampling(BiasMitigator):
    """Reweighing (Kamiran & Calders): sample weights that decorrelate a protected attribute from the label.

    Args:
        attribute_column: Column holding the protected attribute; when None,
            the attribute is the group whose words occur in the text.
        attribute_terms: Attribute lists (tab-separated, one column per group)
            used when ``attribute_column`` is None.
        groups: Names of the attribute lists' columns (default: the file's
            ``# groups:`` line).
        label_column: Column holding the label y; when None, groups are
            balanced.
    """

    splits: ClassVar[tuple[str, ...]] = ("train",)

    def __init__(self, attribute_column: str | None = None, attribute_terms: list[str] | None = None,
                 groups: list[str] | None = None, label_column: str | None = None) -> None:
        super().__init__()
        self.attribute_column = attribute_column
        self.label_column = label_column
        self.attribute_terms = list(attribute_terms) if attribute_terms is not None else [GENDER_TERMS]
        self._terms = None
        if attribute_column is None:
            self._terms = read_attribute_terms(self.attribute_terms, "BalancedSampling.attribute_terms", groups)
            self._term_groups = self._terms.term_groups("BalancedSampling.attribute_terms")
        #: Group (and label) -> (count, weight), filled by ``sample_weights``.
        self.summary: dict[tuple[Hashable, ...], tuple[int, float]] = {}

    def _column(self, examples: datasets.Dataset, column: str, key: str) -> list:
        if column not in examples.column_names:
            raise ValueError(
                f"BalancedSampling: {key}={column!r} is not a column of the training documents; their columns are "
                f"{examples.column_names}. Use a jsonl/csv/parquet file with that column, or set {key}: null."
            )
        return list(examples[column])

    def attributes(self, examples: datasets.Dataset) -> list[Hashable | None]:
        """The protected attribute of each document (None when it has none)."""
        if self.attribute_column is not None:
            return self._column(examples, self.attribute_column, "attribute_column")
        names = self._terms.groups
        return [None if (g := single_group(t, self._term_groups)) is None else names[g] for t in examples["text"]]

    def sample_weights(self, examples: datasets.Dataset) -> list[float]:
        groups = self.attributes(examples)
        labels = self._column(examples, self.label_column, "label_column") if self.label_column else None
        weights = reweighing_weights(groups, labels)
        cells: dict[tuple[Hashable, ...], list[float]] = {}
        for i, s in enumerate(groups):
            cell = (s,) if labels is None else (s, labels[i])
            cells.setdefault(cell, []).append(weights[i])
        self.summary = {cell: (len(w), w[0]) for cell, w in sorted(cells.items(), key=lambda kv: repr(kv[0]))}
        header = "group" if labels is None else "group, label"
        rows = "\n".join(f"  {', '.join(map(str, cell))}: {count} documents, weight {weight:.4f}"
                         for cell, (count, weight) in self.summary.items())
        # Lightning shows its rank-zero INFO messages in the run log; lmforge does not configure logging.
        rank_zero_info(f"BalancedSampling ({header}; None = no single group):\n{rows}")
        return weights

    def data_fingerprint(self) -> str:
        digest = file_digest(self._terms.paths) if self._terms is not None else ""
        return f"{super().data_fingerprint()}:{digest}"
