"""LabeledTextData: labeled examples for fine-tuning (classification, regression, tagging).

Rows come from local ``jsonl``/``csv``/``parquet`` files. The recipe names the
columns; inside lmforge (and for the data-stage plugins) they are renamed to
``text`` (or ``tokens`` when it holds word lists), ``text_pair`` (two-sentence
tasks) and ``label``. What the label column holds decides the task, and the
objective checks that it fits:

==================================  ============================  ==============================
``text`` column                      ``label`` column               kind
==================================  ============================  ==============================
a string                             a string or an integer         ``class`` (single-label)
a string                             a list of strings              ``multi`` (multi-label)
a string                             a float                        ``regression``
a list of words                      a list of tags, one per word   ``tags`` (token classification)
==================================  ============================  ==============================

Label names are sorted (tags: ``O`` first, then by entity type, ``B-`` before
``I-``) unless ``data.labels`` fixes them; their position is the label id.
A validation label that the training split lacks is an error unless
``data.labels`` lists it. Sub-word tokens of a word: the first carries the
word's tag, the others are ignored (-100), as in HF's ``run_ner.py``.
Batches are padded to their longest example.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from lmforge.core import static
from lmforge.core.data.base import BaseTextData, fingerprint
from lmforge.core.data.files import DataFileError, read_rows, resolve_files
from lmforge.core.data.tokenizer import TokenizerSpec

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase
if static.TYPE_CHECKING:  # not run by the recipe parser: see lmforge.core.static
    import datasets

log = logging.getLogger(__name__)

LabelKind = Literal["class", "multi", "regression", "tags"]
IGNORE_INDEX = -100
#: The file written next to the run's tokenizer: label names, ids, kind and class counts.
LABELS_FILE = "labels.json"


@dataclass
class LabelInfo:
    """The labels of a labeled dataset.

    Attributes:
        kind: ``class``, ``multi``, ``regression`` or ``tags`` (see the module docstring).
        names: Label names by id (empty for regression).
        counts: Per split, examples per label (``multi``: examples carrying the
            label; ``tags``: words with the tag; ``regression``: none).
    """

    kind: LabelKind
    names: list[str]
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    @property
    def num_labels(self) -> int:
        return 1 if self.kind == "regression" else len(self.names)


# -- pure helpers --------------------------------------------------------------------------------


def _feature_type(feature: Any) -> str:
    """``string``, ``int``, ``float``, ``bool``, ``list[string]``, ``list[int]``, ... of a ``datasets`` feature."""
    inner = getattr(feature, "feature", None)
    if inner is not None and not hasattr(feature, "dtype"):
        return f"list[{_feature_type(inner)}]"
    dtype = getattr(feature, "dtype", type(feature).__name__)
    for prefix, name in (("int", "int"), ("uint", "int"), ("float", "float"), ("double", "float"),
                         ("bool", "bool"), ("string", "string"), ("large_string", "string"), ("null", "null")):
        if str(dtype).startswith(prefix):
            return name
    return str(dtype)


def label_kind(text_type: str, label_type: str, text_key: str = "data.text_column",
               label_key: str = "data.label_column") -> LabelKind:
    """The kind of task a text column of ``text_type`` and a label column of ``label_type`` make.

    Types are as `_feature_type` spells them (``string``, ``list[string]``, ...).
    """
    if text_type in ("list[string]", "list[null]"):
        if label_type in ("list[string]", "list[null]"):
            return "tags"
        raise DataFileError(
            f"{label_key}: token-level data ({text_key} holds word lists) needs a list of tags per row, one per "
            f"word; the label column holds {label_type}."
        )
    if text_type != "string":
        raise DataFileError(f"{text_key}: the text column must hold strings (or word lists for tagging), got {text_type}.")
    if label_type in ("string", "int", "bool"):
        return "class"
    if label_type == "float":
        return "regression"
    if label_type in ("list[string]", "list[int]", "list[null]"):
        return "multi"
    raise DataFileError(
        f"{label_key}: labels must be class names (strings or integers), lists of names (multi-label) or floats "
        f"(regression), got {label_type}. Check that every row's label has the same type."
    )


def _tag_order(tag: str) -> tuple:
    if tag == "O":
        return (0,)
    if len(tag) > 2 and tag[1] == "-" and tag[0] in "BIES":
        return (1, tag[2:], "BIES".index(tag[0]))
    return (2, tag)


def label_names(values: Sequence[Any], kind: LabelKind) -> list[str]:
    """The sorted label names of ``values`` (one label, or one list of labels, per row)."""
    if kind == "regression":
        return []
    flat = {v for row in values for v in row} if kind in ("multi", "tags") else set(values)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
        return [str(v) for v in sorted(flat)]  # integer classes in numeric order
    names = {str(v) for v in flat}
    return sorted(names, key=_tag_order) if kind == "tags" else sorted(names)


def stratified_split(keys: Sequence[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Hold out ``fraction`` of the rows of every class (``round(n_class * fraction)`` each).

    Written here because ``datasets``' ``stratify_by_column`` needs a ClassLabel
    column and refuses classes with a single example.

    Returns:
        Sorted row indices of the training and the held-out part.
    """
    by_class: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        by_class.setdefault(key, []).append(index)
    rng = random.Random(seed)
    held: list[int] = []
    for key in sorted(by_class):
        rows = by_class[key]
        rng.shuffle(rows)
        held += rows[: round(len(rows) * fraction)]
    held_set = set(held)
    return [i for i in range(len(keys)) if i not in held_set], sorted(held)


def align_labels(word_ids: Sequence[int | None], word_labels: Sequence[int],
                 ignore_index: int = IGNORE_INDEX) -> list[int]:
    """Token labels from word labels: a word's first sub-token gets its label, every other token
    (later sub-tokens, special tokens) ``ignore_index``.

    Args:
        word_ids: For each token, the index of its word or None (``BatchEncoding.word_ids()``).
        word_labels: One label id per word.
    """
    labels, previous = [], None
    for word in word_ids:
        labels.append(word_labels[word] if word is not None and word != previous else ignore_index)
        previous = word
    return labels


def pad_batch(rows: list[dict[str, Any]], pad_token_id: int, token_labels: bool = False) -> dict[str, torch.Tensor]:
    """Collate rows of different lengths, padding to the longest one in the batch.

    ``input_ids`` pad with ``pad_token_id``, ``attention_mask``/``token_type_ids``
    with 0 and token-level ``labels`` (``token_labels``) with -100; per-example
    labels stack (class ids as int64, multi-hot rows and regression targets as
    float32).
    Written here rather than using ``DataCollatorWithPadding`` because that
    goes through ``tokenizer.pad`` (which needs the tokenizer in every worker)
    and needs a second collator for token labels.
    """
    T = max(len(r["input_ids"]) for r in rows)
    fills = {"input_ids": pad_token_id, "attention_mask": 0, "token_type_ids": 0}
    batch = {}
    for key, fill in fills.items():
        if key in rows[0]:
            batch[key] = torch.tensor([r[key] + [fill] * (T - len(r[key])) for r in rows], dtype=torch.long)
    labels = [r["labels"] for r in rows]
    if token_labels:  # (B, T)
        batch["labels"] = torch.tensor([x + [IGNORE_INDEX] * (T - len(x)) for x in labels], dtype=torch.long)
    else:  # class ids (B,), multi-hot (B, C) or regression targets (B,)
        batch["labels"] = torch.tensor(labels)
        if batch["labels"].is_floating_point():
            batch["labels"] = batch["labels"].float()
    return batch


class _Collate:
    """`pad_batch` with the pad id bound (a class, so DataLoader workers can pickle it)."""

    def __init__(self, pad_token_id: int, token_labels: bool) -> None:
        self.pad_token_id, self.token_labels = pad_token_id, token_labels

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return pad_batch(rows, self.pad_token_id, self.token_labels)


class _Encode:
    """Tokenize a map batch and turn its labels into ids (a class, so ``datasets`` can pickle it)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, info: LabelInfo, max_length: int, pair: bool) -> None:
        # A private copy: a fast tokenizer keeps the truncation settings of its last call, and those
        # would otherwise end up in the checkpoint and the exported tokenizer.json.
        self.tokenizer = copy.deepcopy(tokenizer)
        self.kind, self.label2id, self.max_length, self.pair = info.kind, info.label2id, max_length, pair

    def __call__(self, examples: dict[str, list]) -> dict[str, list]:
        tok = self.tokenizer
        if self.kind == "tags":
            enc = tok(examples["tokens"], is_split_into_words=True, truncation=True, max_length=self.max_length)
            tags = [[self.label2id[str(t)] for t in row] for row in examples["label"]]
            labels = [align_labels(enc.word_ids(i), tags[i]) for i in range(len(tags))]
            out = {"labels": labels}
        else:
            pairs = examples["text_pair"] if self.pair else None
            enc = tok(examples["text"], pairs, truncation=True, max_length=self.max_length)
            out = {"labels": [self._encode(label) for label in examples["label"]]}
        keep = ("input_ids", "attention_mask", "token_type_ids")
        return {**{k: v for k, v in enc.items() if k in keep}, **out}

    def _encode(self, label: Any) -> Any:
        if self.kind == "regression":
            return float(label)
        if self.kind == "multi":
            hot = [0.0] * len(self.label2id)
            for name in label:
                hot[self.label2id[str(name)]] = 1.0
            return hot
        return self.label2id[str(label)]


# -- the DataModule ------------------------------------------------------------------------------


class LabeledTextData(BaseTextData):
    """Labeled text for fine-tuning: examples truncated to ``max_length`` and padded per batch.

    Args:
        train: Training files: paths or globs (``jsonl``, ``csv``, ``parquet``).
            ``lmforge:sentiment/train.jsonl`` names a file bundled with lmforge.
        val: Validation files; when None, ``val_fraction`` of the training rows
            are held out (stratified by label for single-label data).
        test: Test files, read by ``lmforge test`` only (with the training
            split's labels); when None, ``test`` scores the validation split
            (and says so).
        val_fraction: Share of training rows held out when ``val`` is None.
        text_column: Column with the text (a string), or with the words of a
            sentence (a list of strings) for token classification.
        text_pair_column: Column with the second text of two-sentence tasks
            (entailment, similarity); None for single texts.
        label_column: Column with the label: a class name, a list of names
            (multi-label), a float (regression) or a list of tags, one per word.
        labels: Every label name, in id order; None takes the sorted names of
            the training split. List them to keep ids stable across datasets or
            to allow validation labels that training lacks.
        tokenizer: A local tokenizer (``path``: the pretrained model's or the
            pre-training run's ``tokenizer/`` directory) or how to train one
            (``train``).
        max_length: Examples are truncated to this many tokens.
        batch_size: Examples per batch (per device).
        num_workers: DataLoader worker processes.
        cache_dir: Where tokenized datasets and trained tokenizers are cached
            (default ``$LMFORGE_CACHE`` or ``~/.cache/lmforge``).
        seed: Seed of the split, the data-stage plugins and the shuffling; None
            takes the run's ``seed_everything``.
    """

    def __init__(
        self,
        train: str | list[str],
        val: str | list[str] | None = None,
        test: str | list[str] | None = None,
        val_fraction: float = 0.1,
        text_column: str = "text",
        text_pair_column: str | None = None,
        label_column: str = "label",
        labels: list[str] | None = None,
        tokenizer: TokenizerSpec | None = None,
        max_length: int = 128,
        batch_size: int = 32,
        num_workers: int = 0,
        cache_dir: str | None = None,
        seed: int | None = None,
    ) -> None:
        if max_length < 2:
            raise ValueError(f"data.max_length must be at least 2, got {max_length}.")
        super().__init__(train=train, val=val, test=test, val_fraction=val_fraction, tokenizer=tokenizer,
                         batch_size=batch_size, num_workers=num_workers, cache_dir=cache_dir, seed=seed)
        if labels is not None and len(set(labels)) != len(labels):
            raise ValueError(f"data.labels must not repeat a name, got {labels}.")
        self.text_column = text_column
        self.text_pair_column = text_pair_column
        self.label_column = label_column
        self.fixed_labels = list(labels) if labels is not None else None
        self.max_length = max_length
        #: Set by ``setup``: the label names, their kind and class counts.
        self.labels: LabelInfo | None = None
        self.datasets: dict[str, datasets.Dataset] = {}

    def _collate(self) -> _Collate:
        return _Collate(self.tokenizer.pad_token_id, token_labels=self.labels.kind == "tags")

    def save_with_run(self, run_dir: Path) -> None:
        super().save_with_run(run_dir)
        info = asdict(self.labels)
        info["label2id"] = self.labels.label2id
        (run_dir / LABELS_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")

    # -- building --------------------------------------------------------------------------------

    def _load_splits(self) -> dict[str, datasets.Dataset]:
        """The splits, their labels checked against the training split's (which set ``labels``)."""
        raw = super()._load_splits()
        kind = _kind(raw["train"])
        names = self._label_names(raw["train"], kind)
        for split in raw:
            _check_rows(raw[split], kind, names, self.split_key(split), self.fixed_labels is not None)
        self.labels = LabelInfo(kind=kind, names=names)
        return raw

    def _check_split(self, train: datasets.Dataset, rows: datasets.Dataset, key: str) -> None:
        _check_kind(train, rows, key)

    def _hold_out(self, train: datasets.Dataset) -> tuple[datasets.Dataset, datasets.Dataset]:
        """Stratified by label for single-label data."""
        kind = _kind(train)
        keys = [str(v) for v in train["label"]] if kind == "class" else ["all"] * len(train)
        train_rows, val_rows = stratified_split(keys, self.val_fraction, self.seed)
        if not val_rows or not train_rows:
            raise ValueError(
                f"data.val_fraction={self.val_fraction} of {len(train)} training rows leaves "
                f"{len(train_rows)} for training and {len(val_rows)} for validation; change it or give data.val."
            )
        return train.select(train_rows), train.select(val_rows)

    def _make_tokenizer(self, train: datasets.Dataset) -> PreTrainedTokenizerBase:
        tokenizer = self._get_tokenizer(train, self._tokenizer_texts(train, self.labels.kind))
        _ensure_pad_token(tokenizer)
        return tokenizer

    def _check_processed(self, rows: datasets.Dataset, split: str) -> None:
        info = self.labels
        _check_rows(rows, info.kind, info.names, f"{self.split_key(split)} (after the data-stage plugins)", True)
        info.counts[split] = _count(rows["label"], info.kind)
        log.info("%s: %d examples; labels %s", split, len(rows), info.counts[split] or "(regression)")

    def _make_dataset(self, rows: datasets.Dataset, split: str) -> datasets.Dataset:
        return self._encode(rows, self.labels, split)

    def _check_objective(self) -> None:
        objective = self._objective()
        if objective is not None and getattr(objective, "layout", "padded") != "padded":
            raise ValueError(
                f"data: LabeledTextData gives labeled examples, but model.objective {type(objective).__name__} "
                "trains on packed text; use a classification objective (SequenceClassification, "
                "TokenClassification) or data.class_path: lmforge.core.data.TextData."
            )

    def _read(self, files: list[str], key: str) -> datasets.Dataset:
        columns = {self.text_column: "data.text_column", self.label_column: "data.label_column"}
        if self.text_pair_column is not None:
            columns[self.text_pair_column] = "data.text_pair_column"
        rows = read_rows(resolve_files(files, key), columns, key, str(self.cache_dir / "datasets"))
        for column, column_key in columns.items():
            missing = rows.data.column(column).null_count
            if missing:
                first = rows[column].index(None)
                raise DataFileError(f"{key}: {missing} row(s) have no {column!r} ({column_key}), the first is row "
                                    f"{first + 1}. Fill or drop them.")
        names = {self.text_column: "text", self.label_column: "label"}
        if self.text_pair_column is not None:
            names[self.text_pair_column] = "text_pair"
        clashes = [c for c in rows.column_names if c in names.values() and c not in names]
        rows = rows.remove_columns(clashes)  # e.g. a "label" column next to the chosen label_column
        rows = rows.rename_columns({k: v for k, v in names.items() if k != v})
        if _feature_type(rows.features["text"]).startswith("list"):
            # Word lists are "tokens", so a plugin that rewrites "text" cannot silently misalign the tags.
            rows = rows.rename_column("text", "tokens")
        return rows

    def _label_names(self, train: datasets.Dataset, kind: LabelKind) -> list[str]:
        found = label_names(train["label"], kind)
        if kind == "regression":
            if self.fixed_labels is not None:
                raise ValueError("data.labels: the label column holds floats (regression), which has no label names; "
                                 "remove data.labels.")
            return []
        if not found:
            raise DataFileError("data.train: no labels found (every label list is empty).")
        if self.fixed_labels is None:
            return found
        unknown = [n for n in found if n not in self.fixed_labels]
        if unknown:
            raise ValueError(f"data.labels: the training data has label(s) {unknown} that data.labels "
                             f"{self.fixed_labels} does not list; add them.")
        return self.fixed_labels

    def _tokenizer_texts(self, train: datasets.Dataset, kind: LabelKind) -> Iterator[str]:
        """What a trained tokenizer learns from: the texts, the pairs, or the sentences of a word list."""
        if kind == "tags":
            yield from (" ".join(words) for words in train["tokens"])
            return
        for column in ["text", "text_pair"] if self.text_pair_column is not None else ["text"]:
            yield from train[column]

    def _encode(self, rows: datasets.Dataset, info: LabelInfo, split: str) -> datasets.Dataset:
        tokenizer = self.tokenizer
        pair = self.text_pair_column is not None
        encoded = rows.map(
            _Encode(tokenizer, info, self.max_length, pair), batched=True, remove_columns=rows.column_names,
            new_fingerprint=fingerprint(rows._fingerprint, tokenizer.backend_tokenizer.to_str(), info.kind,
                                         info.names, self.max_length, pair, "encode"),
            desc=f"Tokenizing ({split})",
        )
        lengths = encoded.data.column("input_ids").combine_chunks().value_lengths()
        cut = sum(1 for n in lengths.to_pylist() if n >= self.max_length)
        if cut:
            what = "their later words lose their tags" if info.kind == "tags" else "they are truncated"
            log.warning("%s: %d of %d examples reach data.max_length=%d; %s.", split, cut, len(encoded),
                        self.max_length, what)
        return encoded


def _ensure_pad_token(tok: PreTrainedTokenizerBase) -> None:
    """Give ``tok`` a pad token (its end-of-text token, with a warning) when it has none."""
    if tok.pad_token_id is not None:
        return
    if tok.eos_token is None:
        raise ValueError("data.tokenizer: the tokenizer has neither a pad nor an end-of-text token, and batches "
                         "need padding; add a pad token to its tokenizer_config.json.")
    warnings.warn(f"data.tokenizer has no pad token; padding with its end-of-text token {tok.eos_token!r} "
                  "(the usual choice for GPT-2 style models).", stacklevel=2)
    tok.pad_token = tok.eos_token


def _kind(rows: datasets.Dataset) -> LabelKind:
    text = "tokens" if "tokens" in rows.column_names else "text"
    return label_kind(_feature_type(rows.features[text]), _feature_type(rows.features["label"]))


def _check_kind(train: datasets.Dataset, other: datasets.Dataset, key: str) -> None:
    """The split ``key`` has the training split's kind of label (integers pass for regression)."""
    train_kind, kind = _kind(train), _kind(other)
    label_type = _feature_type(other.features["label"])
    if train_kind != kind and not (train_kind == "regression" and label_type == "int"):
        train_type = _feature_type(train.features["label"])
        raise DataFileError(f"{key}: labels are {label_type} ({kind}) but data.train's are {train_type} "
                            f"({train_kind}); give both files the same kind of label.")


def _check_rows(rows: datasets.Dataset, kind: LabelKind, names: list[str], key: str, fixed: bool) -> None:
    """A clear error for a label that is not among ``names``, or a tag list of the wrong length."""
    if kind == "regression":
        return
    if kind == "tags":
        for index, (words, tags) in enumerate(zip(rows["tokens"], rows["label"])):
            if len(words) != len(tags):
                raise ValueError(f"{key}: row {index + 1} has {len(words)} words but {len(tags)} tags; "
                                 "give one tag per word.")
    known = set(names)
    for index, value in enumerate(rows["label"]):
        for label in (value if kind in ("multi", "tags") else [value]):
            if str(label) not in known:
                source = "data.labels" if fixed else "the training labels"
                hint = ("add it to data.labels" if fixed else
                        "fix the file, or list every label name in data.labels (in id order)")
                raise ValueError(f"{key}: row {index + 1} has label {str(label)!r}, which is not among {source} "
                                 f"{names}; {hint}.")


def _count(labels: Sequence[Any], kind: LabelKind) -> dict[str, int]:
    if kind == "regression":
        return {}
    if kind == "class":
        counts = Counter(str(v) for v in labels)
    elif kind == "multi":
        counts = Counter(str(v) for row in labels for v in set(row))
    else:
        counts = Counter(str(v) for row in labels for v in row)
    return dict(sorted(counts.items()))


# -- for the objectives that train on labels -------------------------------------------------------


def labels_of(datamodule: Any, objective: str) -> LabelInfo:
    """The datamodule's `LabelInfo`; a clear error when the data has no labels."""
    labels = getattr(datamodule, "labels", None)
    if not isinstance(labels, LabelInfo):
        got = type(datamodule).__name__ if datamodule is not None else "no DataModule"
        raise ValueError(
            f"{objective} trains on labeled examples, got {got}; set data.class_path: "
            "lmforge.core.data.labeled.LabeledTextData with its train, text_column and label_column."
        )
    return labels


def class_weight_tensor(info: LabelInfo, weights: dict[str, float] | str | None, objective: str) -> torch.Tensor | None:
    """Per-class loss weights by label id: from a ``{name: weight}`` dict (unnamed classes weigh 1) or
    ``"balanced"`` (``n / (k * n_class)`` over the training counts, as scikit-learn)."""
    if weights is None:
        return None
    key = f"model.objective.init_args.class_weights ({objective})"
    if weights == "balanced":
        counts = info.counts.get("train", {})
        empty = [n for n in info.names if not counts.get(n)]
        if empty:
            raise ValueError(f"{key}: 'balanced' cannot weight {empty}, which have no training examples; "
                             "give a {name: weight} dict instead.")
        total = sum(counts[n] for n in info.names)
        return torch.tensor([total / (len(info.names) * counts[n]) for n in info.names], dtype=torch.float)
    if not isinstance(weights, dict):
        raise ValueError(f"{key} must be a {{label name: weight}} dict or 'balanced', got {weights!r}.")
    unknown = sorted(set(weights) - set(info.names))
    if unknown:
        raise ValueError(f"{key}: {unknown} are not label names; the labels are {info.names}.")
    if any(not w >= 0 for w in weights.values()):
        raise ValueError(f"{key}: weights must be non-negative, got {weights}.")
    return torch.tensor([float(weights.get(n, 1.0)) for n in info.names], dtype=torch.float)
