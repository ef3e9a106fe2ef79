"""Tokenizers: loaded from a local directory, or trained on the training split.

Training uses HF ``tokenizers`` and wraps the result as a
``transformers`` fast tokenizer, so the run directory's ``tokenizer/`` loads
with ``AutoTokenizer.from_pretrained`` offline.

- ``bpe``: byte-level BPE (GPT-2 style; no unknown tokens). Encoding a text
  adds no special token, as GPT-2's own tokenizer, so a prompt given to
  ``generate`` or ``pipeline("text-generation")`` is continued; packing puts
  ``<|endoftext|>`` after each document itself (`document_separator`). A text
  pair is ``A <|endoftext|> B``. No ``token_type_ids`` (GPT-2 would embed them
  as tokens).
- ``wordpiece``: lower-cased WordPiece (BERT style). Each document is
  ``[CLS] ... [SEP]``; a text pair is ``[CLS] A [SEP] B [SEP]`` with
  ``token_type_ids`` 0 then 1.

A document longer than ``max_chars`` characters (a whole book on one line) is
trained on and tokenized in pieces cut just before a space (`split_long_text`),
so that memory stays bounded and the fast tokenizer's threads share the work;
the pieces' tokens are the whole document's (`encode_long`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from lmforge.core.data.files import damage_reason, remove_cache_entry

log = logging.getLogger(__name__)

Algorithm = Literal["bpe", "wordpiece"]


@dataclass
class TokenizerTraining:
    """How to train a tokenizer on the training split.

    Args:
        algorithm: ``bpe`` or ``wordpiece``; None takes the objective's default
            (``bpe`` for causal LM, ``wordpiece`` for masked LM).
        vocab_size: Size of the vocabulary, special tokens included.
        min_frequency: Minimum count for a merge/word piece to be kept.
    """

    algorithm: Algorithm | None = None
    vocab_size: int = 8000
    min_frequency: int = 2


@dataclass
class TokenizerSpec:
    """Where the tokenizer comes from: ``path`` (a local directory with a
    ``transformers`` tokenizer) or ``train`` (trained on the training split).

    Args:
        path: Local tokenizer directory (``AutoTokenizer.from_pretrained``).
        train: Training settings, used when ``path`` is None.
    """

    path: str | None = None
    train: TokenizerTraining | None = None


SPECIALS: dict[str, dict[str, str]] = {
    "bpe": {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
            "pad_token": "<pad>", "mask_token": "<mask>"},
    "wordpiece": {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                  "mask_token": "[MASK]", "bos_token": "[CLS]", "eos_token": "[SEP]"},
}


#: What the tokenizer returns to the model (``tokenizer(text)``'s keys).
MODEL_INPUTS: dict[str, list[str]] = {
    "bpe": ["input_ids", "attention_mask"],
    "wordpiece": ["input_ids", "token_type_ids", "attention_mask"],
}


def _special_list(algorithm: str) -> list[str]:
    return list(dict.fromkeys(SPECIALS[algorithm].values()))  # unique, in a fixed order


def train_tokenizer(texts: Iterable[str], training: TokenizerTraining, algorithm: Algorithm,
                    length: int | None = None) -> PreTrainedTokenizerFast:
    """Train a fast tokenizer on ``texts``.

    BPE training is deterministic for the same input; WordPiece training is not (upstream
    huggingface/tokenizers#1794: ``##`` pieces get ids in hash-map order). lmforge therefore trains a
    tokenizer once, caches it by settings and data, saves it with the run and in every checkpoint, and
    validation, testing and resuming from a checkpoint use the checkpoint's tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = _special_list(algorithm)
    # Byte-level BPE always keeps its 256-byte alphabet; WordPiece needs at least its special tokens.
    floor = len(specials) + (256 if algorithm == "bpe" else 0)
    if training.vocab_size <= floor:
        what = "the 256 byte tokens plus the special tokens" if algorithm == "bpe" else "the special tokens"
        raise ValueError(
            f"data.tokenizer.train.vocab_size must be larger than {floor} ({what}) for {algorithm}, "
            f"got {training.vocab_size}."
        )
    if algorithm == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=training.vocab_size, min_frequency=training.min_frequency, special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        )
        eos = SPECIALS["bpe"]["eos_token"]
        template, pair = "$A", f"$A {eos} $B:1"
    else:
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(
            vocab_size=training.vocab_size, min_frequency=training.min_frequency, special_tokens=specials,
            show_progress=False,
        )
        template, pair = "[CLS] $A [SEP]", "[CLS] $A [SEP] $B:1 [SEP]:1"
    tok.train_from_iterator(texts, trainer=trainer, length=length)
    template_specials = [(t, tok.token_to_id(t)) for t in specials if t in pair]
    tok.post_processor = processors.TemplateProcessing(single=template, pair=pair, special_tokens=template_specials)
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_input_names=MODEL_INPUTS[algorithm], **SPECIALS[algorithm])


def tokenizer_from_json(tokenizer_json: str, special_tokens: dict[str, str]) -> PreTrainedTokenizerFast:
    """Rebuild a fast tokenizer from its ``tokenizer.json`` text and special tokens (as checkpoints keep it)."""
    from tokenizers import Tokenizer

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(tokenizer_json), **special_tokens)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """Load a local tokenizer directory; a clear error if it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"data.tokenizer.path: {str(path)!r} is not a directory. Give a local tokenizer directory "
            "(one with tokenizer.json) or use data.tokenizer.train to train one."
        )
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if not tokenizer.is_fast:
        raise ValueError(f"data.tokenizer.path: {path} holds a slow tokenizer; lmforge needs a fast one.")
    return tokenizer


def save_tokenizer_atomically(tokenizer: PreTrainedTokenizerBase, directory: Path) -> None:
    """Save a trained tokenizer into the cache: written into a temporary directory beside ``directory``, then
    renamed, so that a killed or concurrent run never leaves a partial ``tokenizer.json`` that a later one trusts.
    When another process got there first, its tokenizer (the same one: training is keyed by data and settings)
    is kept."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".partial"))
    try:
        tokenizer.save_pretrained(str(temporary))
        os.rename(temporary, directory)
    except OSError:
        if not (directory / "tokenizer.json").is_file():
            raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def load_cached_tokenizer(directory: Path) -> PreTrainedTokenizerBase | None:
    """The tokenizer cached in ``directory``, or None when the entry is damaged (then removed, with a warning that
    names it) or incomplete, so that the caller trains it again."""
    try:
        return load_tokenizer(directory)
    except Exception as exc:  # a truncated tokenizer.json raises whatever tokenizers' JSON reader raises
        log.warning("The cached tokenizer %s is damaged (%s: %s); removing it and training it again.", directory,
                    type(exc).__name__, damage_reason(exc))
        remove_cache_entry(directory)
        return None
#: The layout of the tokenizers `train_tokenizer` makes; a cached tokenizer of another layout is not reused.
#: 2: ``bpe`` adds no end-of-text token to a single text.
TOKENIZER_FORMAT = 2


def training_cache_key(training: TokenizerTraining, algorithm: str, data_fingerprint: str) -> str:
    """A key for a trained tokenizer: its settings, the training data and `TOKENIZER_FORMAT`."""
    payload = json.dumps({"training": asdict(training), "algorithm": algorithm, "data": data_fingerprint,
                          "format": TOKENIZER_FORMAT}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def batched_text(texts: Iterable[str], size: int = 1000, max_chars: int | None = None) -> Iterator[list[str]]:
    """``texts`` in lists of ``size``; documents longer than ``max_chars`` as their `split_long_text` pieces."""
    batch: list[str] = []
    for text in texts:
        pieces = split_long_text(text, max_chars) if max_chars and len(text) > max_chars else (text,)
        for piece in pieces:
            batch.append(piece)
            if len(batch) == size:
                yield batch
                batch = []
    if batch:
        yield batch


def split_long_text(text: str, max_chars: int) -> Iterator[str]:
    """Cut ``text`` into pieces of at most ``max_chars`` characters that join back into ``text``.

    Each cut falls just before a space (U+0020) that precedes a non-space character, the one place where
    both the GPT-2 byte-level and the BERT pre-tokenizers always split: the space opens the next word
    (`` word``), and no pre-token reaches across it. So the pieces' pre-tokens, hence their tokens, are
    exactly the whole text's. A stretch of ``max_chars`` characters without such a space is cut where the
    limit falls; only there may the tokens differ from the whole text's.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}.")
    start, end_of_text = 0, len(text)
    while end_of_text - start > max_chars:
        limit = start + max_chars  # the piece is text[start:cut] with start < cut <= limit
        cut = text.rfind(" ", start + 1, limit + 1)
        while cut > start and (cut + 1 == end_of_text or text[cut + 1].isspace()):
            cut = text.rfind(" ", start + 1, cut)
        if cut <= start:
            cut = limit
        yield text[start:cut]
        start = cut
    yield text[start:]


def special_affixes(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The special token ids the tokenizer puts before and after a document (``[CLS]``/``[SEP]``, EOS)."""
    encoding = tokenizer.backend_tokenizer.encode("a", add_special_tokens=True)
    ids, sequence = encoding.ids, encoding.sequence_ids  # sequence id None marks an added special token
    inside = [i for i, s in enumerate(sequence) if s is not None]
    if not inside:
        return [], []
    return ids[: inside[0]], ids[inside[-1] + 1:]


def document_separator(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids packing puts after each document's tokens: the end-of-text token when the tokenizer adds no
    special token of its own (GPT-2's, lmforge's ``bpe``), nothing when it frames documents itself
    (``[CLS] ... [SEP]``), so that documents are always separated in packed blocks."""
    prefix, suffix = special_affixes(tokenizer)
    if prefix or suffix or tokenizer.eos_token_id is None:
        return []
    return [tokenizer.eos_token_id]


def without_appended_eos(tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """``tokenizer`` made to encode a prompt as itself: when it appends its end-of-text token to every text (as
    lmforge's ``bpe`` tokenizers did before `TOKENIZER_FORMAT` 2, and as checkpoints of then still hold), a copy
    that does not (a pair keeps the token between its texts); otherwise ``tokenizer`` itself."""
    import copy

    from tokenizers import processors

    eos, eos_id = tokenizer.eos_token, tokenizer.eos_token_id
    if eos is None or special_affixes(tokenizer) != ([], [eos_id]):
        return tokenizer
    fixed = copy.deepcopy(tokenizer)
    fixed.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="$A", pair=f"$A {eos} $B:1", special_tokens=[(eos, eos_id)])
    return fixed


def encode_long(tokenizer: PreTrainedTokenizerBase, text: str, max_chars: int, group_chars: int = 1 << 20) -> np.ndarray:
    """The token ids of one long document with its special tokens, as ``tokenizer(text)`` gives them.

    The text is encoded in `split_long_text` pieces, ``group_chars`` characters of them per call, so that
    only one group's encodings (offsets, token strings) are in memory at a time.
    """
    backend = tokenizer.backend_tokenizer
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)  # _fast: no offsets (tokenizers >= 0.21)
    prefix, suffix = special_affixes(tokenizer)
    parts = [np.asarray(prefix, dtype=np.int64)]
    group: list[str] = []
    size = 0
    for piece in [*split_long_text(text, max_chars), None]:
        if piece is not None:
            group.append(piece)
            size += len(piece)
        if group and (piece is None or size >= group_chars):
            parts.extend(np.asarray(e.ids, dtype=np.int64) for e in encode(group, add_special_tokens=False))
            group, size = [], 0
    parts.append(np.asarray(suffix, dtype=np.int64))
    return np.concatenate(parts)


def special_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids of every special token (never masked, noised or counted as words)."""
    return sorted(set(tokenizer.all_special_ids))
