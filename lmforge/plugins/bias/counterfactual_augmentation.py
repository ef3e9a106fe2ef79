"""Counterfactual data augmentation (CDA; Lu et al. 2018, "Gender Bias in Neural
Natural Language Processing").

Every attribute word of a training document is swapped for its counterpart
(he <-> she, his <-> her, king <-> queen, John <-> Mary, ...), keeping the
word's case, its possessive ``'s`` and all punctuation. Two-sided CDA keeps
the original and adds the counterfactual; one-sided CDA replaces the
original (with ``probability`` 0.5 this is Maudslay et al. 2019's
counterfactual data substitution).

The feminine "her" is both an object (him) and a possessive (his). A small
rule decides: "her" directly followed (after spaces only) by a word that is
not a function word (article, preposition, conjunction, pronoun, adverb,
auxiliary; ``FUNCTION_WORDS``) is a possessive -> "his" ("her new car" ->
"his new car"); otherwise it is an object -> "him" ("I gave her the book.",
"we saw her." -> "him"). It errs on an object followed by an adjective or
noun ("made her happy" -> "made his happy"). Names are swapped wherever they
occur as words, so a name that is also a common word ("grace", "mark") is
swapped in both uses.
"""

from __future__ import annotations

import random
import re
from typing import ClassVar, Literal

from lmforge.core.plugins import BiasMitigator, Examples
from lmforge.plugins.bias.wordlists import GENDER_TERMS, WORD, base_word, file_digest, read_attribute_terms

#: Words after which "her" is an object, not a possessive determiner.
FUNCTION_WORDS = frozenset("""
a an the this that these those my your his her its our their some any every each no all both either neither
to of in on at by for with from into onto over under about after before behind between through during without
within around near off out up down away back again too very so and or but nor yet because when while if as than
then there here now today tonight tomorrow yesterday once twice soon later home just also still even ever never
always often well much more most less least how what who whom whose which where why i you he she it we they me
him us them is was are were be been being am has have had do does did will would can could should may might must
not
""".split())
#: An ambiguous word whose two counterparts are an object and a possessive pronoun.
OBJECT_POSSESSIVE = ("him", "his")
_NEXT_WORD = re.compile(r"[ \t]+([^\W\d_]+)")


def match_case(source: str, word: str) -> str:
    """``word`` in the case pattern of ``source`` (lower, Title or UPPER)."""
    if len(source) > 1 and source.isupper():
        return word.upper()
    if source[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def swap_table(rows: tuple[tuple[str, ...], ...], key: str) -> tuple[dict[str, str], set[str]]:
    """Both directions of each pair; the words with an object/possessive ambiguity (her).

    Returns:
        word -> counterpart (lower case), and the set of words to resolve with the "her" rule.
    """
    targets: dict[str, set[str]] = {}
    for row in rows:
        if len(row) != 2:
            raise ValueError(f"{key}: CDA swaps pairs; every row needs exactly two words, got {list(row)}.")
        a, b = row
        targets.setdefault(a, set()).add(b)
        targets.setdefault(b, set()).add(a)
    table, object_possessive = {}, set()
    for word, options in targets.items():
        if len(options) == 1:
            table[word] = next(iter(options))
        elif options == set(OBJECT_POSSESSIVE):
            object_possessive.add(word)
        else:
            raise ValueError(
                f"{key}: {word!r} pairs with {sorted(options)}; only an object/possessive ambiguity (her -> him/his) "
                "is resolved. Keep one pair for this word."
            )
    return table, object_possessive


def counterfactual(text: str, table: dict[str, str], object_possessive: frozenset[str] | set[str] = frozenset()) -> str:
    """``text`` with every attribute word swapped for its counterpart.

    Args:
        text: The document.
        table: Lower-case word -> counterpart (both directions).
        object_possessive: Words that are resolved by the "her" rule.
    """
    out: list[str] = []
    last = 0
    for match in WORD.finditer(text):
        word = match.group()
        lower = word.lower()
        if lower in table:
            new = match_case(word, table[lower])
        elif lower in object_possessive:
            following = _NEXT_WORD.match(text, match.end())
            possessive = following is not None and following.group(1).lower() not in FUNCTION_WORDS
            new = match_case(word, OBJECT_POSSESSIVE[1] if possessive else OBJECT_POSSESSIVE[0])
        else:
            base, suffix = base_word(word)
            if not suffix or base.lower() not in table:
                continue
            new = match_case(base, table[base.lower()]) + suffix
        out.append(text[last:match.start()])
        out.append(new)
        last = match.end()
    out.append(text[last:])
    return "".join(out)


class CounterfactualAugmentation(BiasMitigator):
    """Counterfactual data augmentation: swap gendered (or other paired) words in training text.

    Args:
        pairs: Files of word pairs, one ``word<TAB>counterpart`` per line
            (``lmforge:bias/gender_pairs.tsv`` is bundled: pronouns, nouns,
            titles and first names). Several files are merged, so a list
            extends the bundled one.
        mode: ``two_sided`` keeps each document and adds its counterfactual;
            ``one_sided`` replaces it by its counterfactual.
        probability: Chance that a document containing attribute words gets a
            counterfactual (one-sided with 0.5 is counterfactual data
            substitution).
    """

    splits: ClassVar[tuple[str, ...]] = ("train",)
    #: It swaps words in documents read as strings; token-classification rows are word lists whose labels
    #: would not follow the swap.
    supported_objectives: ClassVar[tuple[str, ...] | None] = ("causal_lm", "masked_lm", "sequence_classification")

    def __init__(self, pairs: list[str] | None = None, mode: Literal["two_sided", "one_sided"] = "two_sided",
                 probability: float = 1.0) -> None:
        super().__init__()
        if mode not in ("two_sided", "one_sided"):
            raise ValueError(f"CounterfactualAugmentation: mode must be 'two_sided' or 'one_sided', got {mode!r}.")
        if not 0.0 < probability <= 1.0:
            raise ValueError(f"CounterfactualAugmentation: probability must be in (0, 1], got {probability}.")
        self.pairs = list(pairs) if pairs is not None else [GENDER_TERMS]
        self.mode = mode
        self.probability = probability
        terms = read_attribute_terms(self.pairs, "CounterfactualAugmentation.pairs")
        self._paths = terms.paths
        self._table, self._object_possessive = swap_table(terms.rows, "CounterfactualAugmentation.pairs")

    def swap(self, text: str) -> str:
        """The counterfactual of ``text``."""
        return counterfactual(text, self._table, self._object_possessive)

    def process_text(self, examples: Examples, rng: random.Random) -> Examples:
        columns = list(examples)
        out: Examples = {c: [] for c in columns}
        added: Examples = {c: [] for c in columns}
        for i, text in enumerate(examples["text"]):
            new = self.swap(text)
            flip = new != text and (self.probability == 1.0 or rng.random() < self.probability)
            if self.mode == "one_sided":
                for c in columns:
                    out[c].append(new if (c == "text" and flip) else examples[c][i])
                continue
            for c in columns:
                out[c].append(examples[c][i])
            if flip:
                # Counterfactuals go after the batch's originals, so that packing rarely puts a document
                # and its counterfactual in the same block.
                for c in columns:
                    added[c].append(new if c == "text" else examples[c][i])
        return {c: out[c] + added[c] for c in columns}

    def data_fingerprint(self) -> str:
        return f"{super().data_fingerprint()}:{file_digest(self._paths)}"
