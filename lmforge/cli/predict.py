"""``lmforge predict MODEL --input FILE --output preds.jsonl``: label a file with a fine-tuned model.

MODEL is an lmforge checkpoint (``.ckpt``) or an exported HF directory of a
sequence classifier or a token classifier. Every input row is written back
with a ``prediction`` and its ``scores``:

- single-label: ``prediction`` is a label name, ``scores`` the probability of each label;
- multi-label: ``prediction`` is the list of labels with probability >= 0.5, ``scores`` as above;
- regression: ``prediction`` is the number (no ``scores``);
- a ``txt`` input: each row holds its ``line`` number (blank lines are not predicted, so rows and lines
  differ; the number matches them back);
- tagging: ``prediction`` is one tag per word, ``scores`` the probability of each word's tag. The
  words are the input's word list, or its text split at whitespace (then written as ``words``).
  Words cut off by ``max_length`` get the tag None.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lmforge.core.backbone import max_positions
from lmforge.core.checkpoint import CKPT_KEY, load_checkpoint, model_from_checkpoint
from lmforge.core.data.files import (
    BUILDERS,
    DataFileError,
    default_cache_dir,
    read_rows,
    resolve_files,
    utf8_problem,
)
from lmforge.core.data.tokenizer import tokenizer_from_json

log = logging.getLogger(__name__)
AUTO_CLASSES = {"ForSequenceClassification": AutoModelForSequenceClassification,
                "ForTokenClassification": AutoModelForTokenClassification}


def load_classifier(path: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A classifier or tagger and its tokenizer from an lmforge checkpoint or an HF directory."""
    path = Path(path)
    if path.is_file():
        checkpoint = load_checkpoint(path)
        saved = checkpoint[CKPT_KEY]
        model = model_from_checkpoint(checkpoint, path).eval()
        tokenizer = tokenizer_from_json(saved["tokenizer"], saved["tokenizer_config"])
    elif path.is_dir():
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        architecture = (config.architectures or ["?"])[0]
        auto = next((a for suffix, a in AUTO_CLASSES.items() if architecture.endswith(suffix)), None)
        if auto is None:
            raise ValueError(f"{path} holds a {architecture}; lmforge predict runs sequence and token classifiers "
                             "(models trained with SequenceClassification or TokenClassification).")
        model = auto.from_pretrained(str(path), local_files_only=True).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    else:
        raise FileNotFoundError(f"{path}: no such checkpoint or model directory.")
    if not any(type(model).__name__.endswith(suffix) for suffix in AUTO_CLASSES):
        raise ValueError(f"{path} holds a {type(model).__name__}; lmforge predict runs sequence and token "
                         "classifiers (models trained with SequenceClassification or TokenClassification).")
    return model, tokenizer


def _batches(rows: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


@torch.no_grad()
def predict_rows(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: list[dict[str, Any]],
                 text_column: str = "text", text_pair_column: str | None = None, batch_size: int = 32,
                 max_length: int | None = None) -> list[dict[str, Any]]:
    """``rows`` with each one's ``prediction`` (and ``scores``) added; see the module docstring."""
    limit = max_positions(model.config)
    max_length = min(max_length or limit or 512, limit or 512)
    device = next(model.parameters()).device
    tagger = type(model).__name__.endswith("ForTokenClassification")
    out = []
    for batch in _batches(rows, batch_size):
        if tagger:
            out += _tag(model, tokenizer, batch, text_column, max_length, device)
        else:
            out += _classify(model, tokenizer, batch, text_column, text_pair_column, max_length, device)
    return out


def _classify(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch: list[dict[str, Any]],
              text_column: str, text_pair_column: str | None, max_length: int, device: torch.device) -> list[dict]:
    texts = [row[text_column] for row in batch]
    pairs = [row[text_pair_column] for row in batch] if text_pair_column else None
    enc = tokenizer(texts, pairs, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    logits = model(**enc.to(device)).logits.float()  # (B, C)
    config = model.config
    if config.problem_type == "regression" or config.num_labels == 1:
        return [{**row, "prediction": float(v)} for row, v in zip(batch, logits[:, 0].tolist())]
    names = [config.id2label[i] for i in range(config.num_labels)]
    if config.problem_type == "multi_label_classification":
        probs = torch.sigmoid(logits).tolist()
        return [{**row, "prediction": [n for n, p in zip(names, ps) if p >= 0.5], "scores": dict(zip(names, ps))}
                for row, ps in zip(batch, probs)]
    probs = torch.softmax(logits, dim=-1).tolist()
    return [{**row, "prediction": names[max(range(len(ps)), key=ps.__getitem__)], "scores": dict(zip(names, ps))}
            for row, ps in zip(batch, probs)]


def _tag(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch: list[dict[str, Any]],
         text_column: str, max_length: int, device: torch.device) -> list[dict]:
    split = [not isinstance(row[text_column], list) for row in batch]
    words = [row[text_column].split() if s else list(row[text_column]) for row, s in zip(batch, split)]
    enc = tokenizer(words, is_split_into_words=True, padding=True, truncation=True, max_length=max_length,
                    return_tensors="pt")
    probs = torch.softmax(model(**enc.to(device)).logits.float(), dim=-1)  # (B, T, C)
    best, tag_ids = probs.max(dim=-1)
    names = model.config.id2label
    out = []
    for b, row in enumerate(batch):
        tags: list[str | None] = [None] * len(words[b])
        scores: list[float | None] = [None] * len(words[b])
        seen = set()
        for t, word in enumerate(enc.word_ids(b)):
            if word is None or word in seen:  # a word's first sub-token carries its tag, as in training
                continue
            seen.add(word)
            tags[word], scores[word] = names[int(tag_ids[b, t])], float(best[b, t])
        if len(seen) < len(words[b]):
            log.warning("row with %d words: the last %d were cut at max_length=%d and have no tag.",
                        len(words[b]), len(words[b]) - len(seen), max_length)
        extra = {"words": words[b]} if split[b] else {}
        out.append({**row, **extra, "prediction": tags, "scores": scores})
    return out


def read_input(path: str, text_column: str, text_pair_column: str | None) -> list[dict[str, Any]]:
    """Rows of a ``txt`` (one text per non-blank line, with its ``line`` number), ``jsonl``, ``csv`` or ``parquet``
    file."""
    files = resolve_files([path], "--input")
    cache = str(default_cache_dir() / "datasets")
    if BUILDERS[files[0].suffix.lower()] == "text":
        return read_lines(files[0])
    columns = {text_column: "--text-column"}
    if text_pair_column:
        columns[text_pair_column] = "--text-pair-column"
    return read_rows(files, columns, "--input", cache).to_list()


def read_lines(path: Path) -> list[dict[str, Any]]:
    """``{"text": ..., "line": N}`` for each non-blank line of a text file (N counts every line from 1), so that a
    prediction can be matched back to its line; blank lines get none."""
    problem = utf8_problem(path)
    if problem:
        raise DataFileError(f"--input: {problem}")
    rows = []
    with path.open(encoding="utf-8-sig", newline="") as f:  # a BOM is the encoding's mark, not text
        for number, line in enumerate(f, start=1):
            text = line.rstrip("\r\n")
            if "\0" in text:
                raise DataFileError(f"--input: {path}, line {number}: holds a NUL character (U+0000); fix the line.")
            if text.strip():
                rows.append({"text": text, "line": number})
    if not rows:
        raise DataFileError(f"--input: {path} holds no non-blank line.")
    return rows


def check_paths(input_path: str, output_path: str, batch_size: int, max_length: int | None) -> None:
    """Refuse what would destroy the input or write nothing: an output that is the input, a directory, a batch size
    or length below 1."""
    if batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch_size}.")
    if max_length is not None and max_length < 1:
        raise ValueError(f"--max-length must be at least 1, got {max_length}.")
    source, target = Path(input_path), Path(output_path)
    same = target.exists() and source.exists() and os.path.samefile(source, target)
    if same or source.resolve() == target.resolve():
        raise ValueError(f"--output {output_path} is the input file; writing the predictions there would replace "
                         "the input. Give another --output.")
    if target.is_dir():
        raise ValueError(f"--output {output_path} is a directory; give a file name (predictions.jsonl).")


def predict_file(model_path: str, input_path: str, output_path: str, text_column: str = "text",
                 text_pair_column: str | None = None, batch_size: int = 32, max_length: int | None = None,
                 device: str | None = None) -> int:
    """Write the predictions for ``input_path`` to ``output_path`` (jsonl); returns the number of rows.

    The output is written to a temporary file beside it and renamed when complete: an interrupted run leaves an
    earlier output as it was. An output that is the input, a batch size below 1 and the like are refused
    (`check_paths`).
    """
    check_paths(input_path, output_path, batch_size, max_length)
    model, tokenizer = load_classifier(model_path)
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rows = read_input(input_path, text_column, text_pair_column)
    predictions = predict_rows(model, tokenizer, rows, text_column, text_pair_column, batch_size, max_length)
    if len(predictions) != len(rows):
        raise RuntimeError(f"predicted {len(predictions)} rows of {len(rows)}; nothing was written.")
    output = Path(output_path)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in predictions:
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return len(predictions)
