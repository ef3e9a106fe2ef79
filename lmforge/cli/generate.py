"""``lmforge generate MODEL --prompt TEXT | --input FILE``: answer instructions with an instruction-tuned causal LM.

MODEL is one of

- an exported model directory (``lmforge export CKPT DIR``, or any local HF causal LM);
- a ``peft`` adapter directory (``lmforge export CKPT DIR --adapter-only``): its base model is the directory
  the adapter names (``base_model_name_or_path``) or ``--base DIR``;
- an lmforge checkpoint (``.ckpt``); one trained with LoRA is rebuilt from its base model.

Each prompt is a user turn, formatted with the model's chat template (the one instruction tuning stored
with the tokenizer, or lmforge's default when the tokenizer has none: the same rule as in training), and
answered greedily up to the end-of-text token (`lmforge.core.generation.generate_responses`).

``--input`` takes a ``txt`` file (one prompt per line) or ``jsonl``/``csv``/``parquet`` rows, either with
a ``messages`` column (a conversation; a final assistant turn is the reference answer) or a prompt column
(``--prompt-column``) and optionally a response column (``--response-column``) holding the reference.
With references, each output row says whether the answer matches exactly and the command prints the
exact-match rate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from lmforge.core.checkpoint import CKPT_KEY, load_checkpoint, model_from_checkpoint
from lmforge.core.data.files import BUILDERS, DataFileError, default_cache_dir, read_rows, resolve_files
from lmforge.core.data.instruction import (
    Message,
    chat_template_for,
    exact_match,
    message_problem,
)
from lmforge.core.data.tokenizer import tokenizer_from_json
from lmforge.core.generation import generate_responses, prompt_and_reference

CAUSAL = "AutoModelForCausalLM"


def load_generator(path: str | Path, base: str | Path | None = None) -> tuple[Any, PreTrainedTokenizerBase]:
    """The causal LM at ``path`` (see the module docstring), in eval mode, and its tokenizer."""
    path = Path(path)
    if path.is_file():
        checkpoint = load_checkpoint(path)
        saved = checkpoint[CKPT_KEY]
        if saved["auto_model"] != CAUSAL:
            raise ValueError(f"{path} holds a model trained as {saved['auto_model']}; lmforge generate needs a causal "
                             "LM (trained with CausalLM).")
        model = model_from_checkpoint(checkpoint, path, base)
        tokenizer = tokenizer_from_json(saved["tokenizer"], saved["tokenizer_config"])
    elif (path / "adapter_config.json").is_file():
        model, tokenizer = _load_adapter(path, base)
    elif (path / "config.json").is_file():
        if base is not None:
            raise ValueError(f"--base: {path} is a whole model, not an adapter directory; leave --base out.")
        model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    else:
        raise FileNotFoundError(f"{path}: not a checkpoint (.ckpt), a model directory (config.json) or an adapter "
                                "directory (adapter_config.json).")
    return model.eval(), tokenizer


def _load_adapter(path: Path, base: str | Path | None) -> tuple[Any, PreTrainedTokenizerBase]:
    from peft import PeftModel

    recorded = json.loads((path / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
    base_dir = Path(base) if base is not None else (Path(recorded) if recorded else None)
    if base_dir is None or not base_dir.is_dir():
        raise FileNotFoundError(f"{path} is an adapter directory whose base model ({recorded or 'not recorded'}) is "
                                "not a directory here; give the base model's directory with --base DIR.")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base_dir), local_files_only=True),
                                      str(path))
    tokenizer_dir = path if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file() \
        else base_dir
    return model, AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)


def read_conversations(path: str, prompt_column: str = "prompt", response_column: str = "response",
                       messages_column: str = "messages") -> list[tuple[list[Message], str | None]]:
    """``(conversation to answer, reference answer or None)`` for each row of ``path`` (see the module docstring)."""
    files = resolve_files([path], "--input")
    if BUILDERS[files[0].suffix.lower()] == "text":
        lines = [line.strip() for line in files[0].read_text(encoding="utf-8").splitlines()]
        return [([{"role": "user", "content": line}], None) for line in lines if line]
    cache = str(default_cache_dir() / "datasets")
    try:
        rows = read_rows(files, {messages_column: "--messages-column"}, "--input", cache, csv_as_text=True)
    except DataFileError as exc:
        if "has no column" not in str(exc):
            raise
        rows = read_rows(files, {prompt_column: "--prompt-column"}, "--input", cache, csv_as_text=True)
    out: list[tuple[list[Message], str | None]] = []
    for number, row in enumerate(rows.to_list(), start=1):
        if messages_column in row:
            messages = row[messages_column]
            problem = message_problem(messages) if messages and messages[-1].get("role") == "assistant" else None
            if problem or not messages:
                raise DataFileError(f"--input: row {number}: {problem or 'messages must not be empty'}.")
            out.append(prompt_and_reference([{"role": m["role"], "content": m["content"]} for m in messages]))
        else:
            if not isinstance(row[prompt_column], str) or not row[prompt_column].strip():
                raise DataFileError(f"--input: row {number}: {prompt_column} must be non-empty text, got "
                                    f"{row[prompt_column]!r}.")
            reference = row.get(response_column)
            out.append(([{"role": "user", "content": row[prompt_column]}], reference if isinstance(reference, str)
                        else None))
    return out


def generate_file(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                  conversations: list[tuple[list[Message], str | None]], output: str | None = None,
                  chat_template: str | None = None, **options: Any) -> list[dict[str, Any]]:
    """Answer ``conversations``; write the rows to ``output`` (jsonl) when given, and return them.

    Each row holds the ``prompt`` (the last user turn), the ``response`` and, with a reference, the
    ``reference`` and ``exact_match``.
    """
    template = chat_template_for(tokenizer, chat_template)
    answers = generate_responses(model, tokenizer, [c for c, _ in conversations], template, **options)
    rows = []
    for (conversation, reference), answer in zip(conversations, answers):
        row: dict[str, Any] = {"prompt": conversation[-1]["content"], "response": answer}
        if reference is not None:
            row.update(reference=reference, exact_match=exact_match(answer, reference))
        rows.append(row)
    if output is not None:
        target = Path(output)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        tmp.replace(target)
    return rows


def device_for(name: str | None) -> torch.device:
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
