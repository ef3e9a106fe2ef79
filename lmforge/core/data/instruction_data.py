"""InstructionData: instruction/response examples for supervised fine-tuning of a causal LM.

Rows come from local ``jsonl``/``csv``/``parquet`` files in one of two shapes:

- chat ``messages``: a list of ``{"role", "content"}`` (roles ``system``, ``user``, ``assistant``);
- a ``prompt`` and a ``response`` column (and optionally a ``system`` column).

Both are formatted with a chat template and tokenized with labels on the response tokens only
(`lmforge.core.data.instruction`); examples longer than ``max_length`` are truncated, dropped or refused as
``long_examples`` says, always with a count in the log. Then they are laid out
(`lmforge.core.data.instruction_layout`) either padded per batch, in length-grouped batches (the default;
batches carry a 2-D ``attention_mask``), or packed into blocks of ``max_length`` tokens (batches carry
``position_ids``; the model's block-diagonal mask is built from them on the device by
`lmforge.core.data.instruction_layout.model_inputs`). Every batch has ``input_ids`` and ``labels``.

The chat template used (the tokenizer's own, ``chat_template``, or lmforge's default) is set as the
tokenizer's ``chat_template``, so that the run's saved ``tokenizer/`` formats prompts the same way.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from lmforge.core import static
from lmforge.core.data.base import BaseTextData, ResumableSampler, fingerprint
from lmforge.core.data.files import BUILDERS, DataFileError, read_rows, resolve_files
from lmforge.core.data.instruction import (
    IGNORE_INDEX,
    EncodedConversation,
    LongExamples,
    Message,
    chat_template_for,
    encode_conversation,
    message_problem,
    prompt_response_messages,
    truncate,
)
from lmforge.core.data.instruction_layout import (
    LengthGroupedSampler,
    PackCollate,
    PackedExamples,
    PadCollate,
    PaddedExamples,
    TokenizedExamples,
    pack_examples,
)
from lmforge.core.data.tokenizer import TokenizerSpec

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase
if static.TYPE_CHECKING:  # not run by the recipe parser: see lmforge.core.static
    import datasets

log = logging.getLogger(__name__)

Shape = Literal["auto", "messages", "prompt_response"]
Layout = Literal["packed", "padded"]
#: Bad rows named in a warning or error, at most.
SHOWN_ROWS = 5


class InstructionData(BaseTextData):
    """Instruction examples for supervised fine-tuning: loss on the response tokens only.

    Args:
        train: Training files: paths or globs (``jsonl``, ``csv``, ``parquet``).
            ``lmforge:instructions/train.jsonl`` names the set bundled with lmforge.
        val: Validation files; when None, ``val_fraction`` of the training rows are held out.
        val_fraction: Share of training rows held out when ``val`` is None.
        shape: ``messages`` (a chat column), ``prompt_response`` (two text columns) or ``auto``: messages
            when the files have ``messages_column``, otherwise prompt and response.
        messages_column: Column with the chat messages (a list of ``{role, content}``).
        prompt_column: Column with the prompt (``prompt_response`` shape).
        response_column: Column with the response (``prompt_response`` shape).
        system_column: Column with a system message for each prompt (``prompt_response`` shape); None for none.
        chat_template: The Jinja chat template to format with; None takes the tokenizer's own, or
            lmforge's default (`lmforge.core.data.instruction.DEFAULT_CHAT_TEMPLATE`) when it has none;
            ``default`` takes lmforge's even when the tokenizer has one. Saved with the run's tokenizer.
        tokenizer: A local tokenizer (``path``: the pretrained model's directory or a pre-training run's
            ``tokenizer/``) or how to train one (``train``).
        max_length: Tokens of an example at most, and of a packed block.
        long_examples: An example longer than ``max_length``: ``truncate`` (keep its first tokens; one left
            without any response token is dropped), ``drop`` or ``error`` (stop). The log says how many.
        layout: ``padded`` (one example per row, length-grouped batches) or ``packed`` (several examples per
            row, kept apart by positions and mask). Padded is the default: on the bundled set it trained
            1.3x (blocks of 128) to 1.8x (blocks of 512) more examples per second than packed on CPU, and
            wastes ~1% of token slots on padding to packing's 5-8% (benchmarks/sft_layout.py).
        batch_size: Rows per batch (per device): blocks when packed, examples when padded.
        num_workers: DataLoader worker processes.
        cache_dir: Where tokenized datasets and trained tokenizers are cached
            (default ``$LMFORGE_CACHE`` or ``~/.cache/lmforge``).
        seed: Seed of the split and the shuffling; None takes the run's ``seed_everything``.
        skip_bad_rows: Leave out rows that cannot be trained on (no assistant turn, an empty response, an
            unknown role, a missing value) with a warning that counts them, instead of stopping at the first.
    """

    def __init__(
        self,
        train: str | list[str],
        val: str | list[str] | None = None,
        val_fraction: float = 0.05,
        shape: Shape = "auto",
        messages_column: str = "messages",
        prompt_column: str = "prompt",
        response_column: str = "response",
        system_column: str | None = None,
        chat_template: str | None = None,
        tokenizer: TokenizerSpec | None = None,
        max_length: int = 512,
        long_examples: LongExamples = "truncate",
        layout: Layout = "padded",
        batch_size: int = 8,
        num_workers: int = 0,
        cache_dir: str | None = None,
        seed: int | None = None,
        skip_bad_rows: bool = False,
    ) -> None:
        if max_length < 2:
            raise ValueError(f"data.max_length must be at least 2, got {max_length}.")
        super().__init__(train=train, val=val, test=None, val_fraction=val_fraction, tokenizer=tokenizer,
                         batch_size=batch_size, num_workers=num_workers, cache_dir=cache_dir, seed=seed)
        for key, value, choices in (("shape", shape, ("auto", "messages", "prompt_response")),
                                    ("long_examples", long_examples, ("truncate", "drop", "error")),
                                    ("layout", layout, ("packed", "padded"))):
            if value not in choices:
                raise ValueError(f"data.{key} must be one of {list(choices)}, got {value!r}.")
        self.shape = shape
        self.messages_column = messages_column
        self.prompt_column = prompt_column
        self.response_column = response_column
        self.system_column = system_column
        self.chat_template = chat_template
        self.max_length = max_length
        self.long_examples = long_examples
        self.layout = layout
        self.skip_bad_rows = skip_bad_rows
        #: Set by ``setup``: the template the examples were formatted with (also the tokenizer's).
        self.template: str | None = None
        #: Set by ``setup``: the validation conversations, for generation-based evaluation (exact match).
        self.val_conversations: list[list[Message]] = []
        self.datasets: dict[str, PackedExamples | PaddedExamples] = {}

    # -- loaders ---------------------------------------------------------------------------------

    def _collate(self) -> PackCollate | PadCollate:
        return (PackCollate if self.layout == "packed" else PadCollate)(self.pad_token_id)

    def _sampler(self, data: PackedExamples | PaddedExamples, rank: int, world_size: int) -> ResumableSampler:
        """Padded examples in length-grouped batches (packed blocks as `BaseTextData._sampler`)."""
        if self.layout == "packed":
            return super()._sampler(data, rank, world_size)
        return LengthGroupedSampler(data.lengths, self.batch_size, self.seed, rank, world_size,
                                    weights=self.train_weights)

    @property
    def pad_token_id(self) -> int:
        """The id padding is filled with (the pad token, else EOS: padding is masked and never labeled)."""
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    # -- building --------------------------------------------------------------------------------

    def _make_tokenizer(self, train: datasets.Dataset) -> PreTrainedTokenizerBase:
        """The tokenizer with the chat template set (saved with the run's tokenizer)."""
        tokenizer = self._get_tokenizer(train, _contents(train))
        self.template = chat_template_for(tokenizer, self.chat_template)
        tokenizer.chat_template = self.template
        return tokenizer

    def _check_processed(self, rows: datasets.Dataset, split: str) -> None:
        if split == "val":
            self.val_conversations = list(rows["messages"])

    def _make_dataset(self, rows: datasets.Dataset, split: str) -> PackedExamples | PaddedExamples:
        return self._layout(self._encode(rows, split), split)

    def _check_objective(self) -> None:
        objective = self._objective()
        auto_model = getattr(objective, "auto_model", "AutoModelForCausalLM")
        if objective is not None and auto_model != "AutoModelForCausalLM":
            raise ValueError(
                f"data: InstructionData trains a causal LM on instruction/response examples, but model.objective "
                f"{type(objective).__name__} builds an {auto_model}; use a causal LM objective."
            )

    def _resolved_shape(self, files: list[Path]) -> str:
        if self.shape != "auto":
            return self.shape
        return "messages" if self.messages_column in _file_columns(files[0]) else "prompt_response"

    def _read(self, patterns: list[str], key: str) -> datasets.Dataset:
        """The rows of ``patterns`` (recipe key ``key``) as a ``messages`` column; bad rows refused or skipped."""
        files = resolve_files(patterns, key)
        shape = self._resolved_shape(files)
        if shape == "messages":
            columns = {self.messages_column: "data.messages_column"}
        else:
            columns = {self.prompt_column: "data.prompt_column", self.response_column: "data.response_column"}
            if self.system_column is not None:
                columns[self.system_column] = "data.system_column"
        rows = read_rows(files, columns, key, str(self.cache_dir / "datasets"), csv_as_text=True)
        to_messages = _ToMessages(shape, self.messages_column, self.prompt_column, self.response_column,
                                  self.system_column)
        rows = rows.map(to_messages, batched=True, remove_columns=list(columns),
                        new_fingerprint=fingerprint(rows._fingerprint, "to-messages", shape, sorted(columns)),
                        desc=f"Reading conversations ({key})")
        return self._check_rows(rows, key, shape)

    def _check_rows(self, rows: datasets.Dataset, key: str, shape: str) -> datasets.Dataset:
        bad = [(i, problem) for i, problem in enumerate(rows["problem"]) if problem]
        rows = rows.remove_columns("problem")
        if not bad:
            return rows
        shown = "; ".join(f"row {i + 1}: {problem}" for i, problem in bad[:SHOWN_ROWS])
        what = "the messages column (data.messages_column)" if shape == "messages" else \
            "the prompt and response columns (data.prompt_column, data.response_column)"
        if not self.skip_bad_rows:
            raise DataFileError(f"{key}: {len(bad)} of {len(rows)} row(s) cannot be trained on ({shown}). Fix "
                                f"{what}, or set data.skip_bad_rows: true to leave such rows out.")
        log.warning("%s: left out %d of %d row(s) that cannot be trained on (%s); data.skip_bad_rows is on.",
                    key, len(bad), len(rows), shown)
        bad_rows = {i for i, _ in bad}
        kept = rows.select([i for i in range(len(rows)) if i not in bad_rows])
        if len(kept) == 0:
            raise DataFileError(f"{key}: no row can be trained on; fix {what}.")
        return kept

    def _encode(self, rows: datasets.Dataset, split: str) -> datasets.Dataset:
        """Tokenize, then apply ``long_examples`` to the examples longer than ``max_length``."""
        tokenizer, key = self.tokenizer, self.split_key(split)
        encoded = rows.map(
            _Encode(tokenizer, self.template), batched=True, remove_columns=rows.column_names,
            new_fingerprint=fingerprint(rows._fingerprint, tokenizer.backend_tokenizer.to_str(), self.template,
                                         tokenizer.eos_token_id, "instruction-encode"),
            desc=f"Tokenizing ({split})",
        )
        lengths = np.asarray(encoded.data.column("input_ids").combine_chunks().value_lengths(), dtype=np.int64)
        long = np.flatnonzero(lengths > self.max_length)
        if len(long) == 0:
            return encoded
        where = f"{key} ({split} split)"
        if self.long_examples == "error":
            raise ValueError(
                f"{where}: {len(long)} of {len(encoded)} examples are longer than data.max_length={self.max_length} "
                f"tokens (the longest has {int(lengths.max())}; the first is row {int(long[0]) + 1}). Raise "
                "data.max_length, or set data.long_examples to truncate or drop."
            )
        if self.long_examples == "drop":
            log.warning("%s: dropped %d of %d examples longer than data.max_length=%d tokens (data.long_examples: "
                        "drop).", where, len(long), len(encoded), self.max_length)
            keep = np.flatnonzero(lengths <= self.max_length)
        else:
            encoded = encoded.map(_Truncate(self.max_length), batched=True,
                                  new_fingerprint=fingerprint(encoded._fingerprint, "truncate", self.max_length),
                                  desc=f"Truncating ({split})")
            useful = np.asarray(encoded["has_response"], dtype=bool)
            keep = np.flatnonzero(useful)
            log.warning("%s: truncated %d of %d examples to data.max_length=%d tokens (data.long_examples: "
                        "truncate); %d of them kept no response token and were dropped.", where, len(long),
                        len(encoded), self.max_length, int((~useful).sum()))
            encoded = encoded.remove_columns("has_response")
        if len(keep) == 0:
            raise ValueError(f"{where}: no example fits in data.max_length={self.max_length} tokens; raise it.")
        return encoded.select(keep)

    def _layout(self, encoded: datasets.Dataset, split: str) -> PackedExamples | PaddedExamples:
        if encoded._indices is not None:  # a selection (dropped examples): its table still holds every row
            encoded = encoded.flatten_indices()
        ids, labels = (encoded.data.column(c).combine_chunks() for c in ("input_ids", "labels"))
        examples = TokenizedExamples(np.asarray(ids.flatten()), np.asarray(labels.flatten()),
                                     np.asarray(ids.value_lengths()))
        tokens, targets = int(examples.lengths.sum()), int((examples.labels != IGNORE_INDEX).sum())
        if self.layout == "padded":
            log.info("%s: %d examples, %d tokens, %d response tokens (padded, length-grouped batches of %d)",
                     split, len(examples), tokens, targets, self.batch_size)
            return PaddedExamples(examples)
        blocks = pack_examples(examples.lengths, self.max_length)
        if split == "train" and self.train_weights is not None:
            self.train_weights = _block_weights(self.train_weights, examples.lengths, blocks)
        log.info("%s: %d examples, %d tokens, %d response tokens, packed into %d blocks of %d (%.1f%% full)",
                 split, len(examples), tokens, targets, len(blocks), self.max_length,
                 100.0 * tokens / (len(blocks) * self.max_length))
        return PackedExamples(examples, blocks)


def _block_weights(example_weights: torch.Tensor, lengths: np.ndarray, blocks: list[list[int]]) -> torch.Tensor:
    """A packed block's sampling weight: the mean weight of its tokens, each carrying its example's."""
    w = example_weights.double()
    n = torch.as_tensor(lengths, dtype=torch.double)
    return torch.stack([(w[b] * n[b]).sum() / n[b].sum() for b in map(torch.as_tensor, blocks)])


def _file_columns(path: Path) -> list[str]:
    """The column names of a data file, read from its first row (header, first JSON line, parquet schema)."""
    builder = BUILDERS.get(path.suffix.lower())
    try:
        if builder == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        with path.open(encoding="utf-8") as f:
            if builder == "csv":
                return next(csv.reader(f), [])
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    return list(row) if isinstance(row, dict) else []
    except (OSError, ValueError):
        pass  # read_rows describes what is wrong with the file
    return []


def _contents(rows: datasets.Dataset) -> Any:
    """Every message text of ``rows``, what a tokenizer to train is trained on."""
    for messages in rows["messages"]:
        for message in messages:
            yield message["content"]


class _ToMessages:
    """A map batch of rows -> ``messages`` and ``problem`` (why a row cannot be trained on, or "")."""

    def __init__(self, shape: str, messages: str, prompt: str, response: str, system: str | None) -> None:
        self.shape, self.messages, self.prompt, self.response, self.system = shape, messages, prompt, response, system

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {"messages": [], "problem": []}
        if self.shape == "messages":
            for messages in batch[self.messages]:
                problem = message_problem(messages)
                out["messages"].append([{"role": m["role"], "content": m["content"]} for m in messages]
                                       if problem is None else [])
                out["problem"].append(problem or "")
            return out
        systems = batch[self.system] if self.system is not None else [None] * len(batch[self.prompt])
        for prompt, response, system in zip(batch[self.prompt], batch[self.response], systems):
            problem = None
            for name, value in ((self.prompt, prompt), (self.response, response)):
                if not isinstance(value, str) or not value.strip():
                    problem = f"{name} must be non-empty text, got {value!r}"
                    break
            if problem is None and system is not None and not isinstance(system, str):
                problem = f"{self.system} must be text, got {system!r}"
            out["messages"].append(prompt_response_messages(prompt, response, system) if problem is None else [])
            out["problem"].append(problem or "")
        return out


class _Encode:
    """Tokenize a map batch of conversations (a class, so ``datasets`` can pickle it)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, template: str) -> None:
        self.tokenizer, self.template = tokenizer, template

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        encoded = [encode_conversation(self.tokenizer, messages, self.template) for messages in batch["messages"]]
        return {"input_ids": [e.input_ids for e in encoded], "labels": [e.labels for e in encoded]}


class _Truncate:
    """Cut a map batch's examples to ``max_length`` tokens; ``has_response`` marks those that keep a label."""

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {"input_ids": [], "labels": [], "has_response": []}
        for ids, labels in zip(batch["input_ids"], batch["labels"]):
            cut = truncate(EncodedConversation(ids, labels), self.max_length)
            out["input_ids"].append(cut.input_ids if cut else ids[: self.max_length])
            out["labels"].append(cut.labels if cut else labels[: self.max_length])
            out["has_response"].append(cut is not None)
        return out
