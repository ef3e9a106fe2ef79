"""Export an lmforge checkpoint as a Hugging Face model directory.

The checkpoint's ``lmforge`` section holds the HF config, the Auto class and
the tokenizer, so no recipe is needed. Weights are written as safetensors. A causal
LM's tokenizer encodes a prompt as itself (no end-of-text token appended), so
``pipeline("text-generation")`` continues it.

A checkpoint trained with LoRA (``model.backbone.lora``) is rebuilt from its base
model (the directory recorded in training, or ``base``; its weights must be the
ones the adapters were trained on) and exported either merged, as a plain HF
model, or with ``adapter_only`` as a ``peft`` adapter directory
(``adapter_config.json``, ``adapter_model.safetensors``) that
``peft.PeftModel.from_pretrained(base_model, DIR)`` loads. Both hold the tokenizer,
with the chat template the model was tuned with.

Nothing the user has is overwritten unless asked: the target must be a new or
empty directory, or ``force`` is given (then only the files the export writes
are replaced; other files in the directory stay). The files are written into a
temporary directory beside the target and moved in when all are there, so an
export that fails leaves the target as it was, and success is reported only
after the model's files are in place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from lmforge.core.checkpoint import (
    CKPT_KEY,
    LORA_KEY,
    adapted_model_from_checkpoint,
    load_checkpoint,
    model_from_checkpoint,
)
from lmforge.core.data.tokenizer import tokenizer_from_json, without_appended_eos

#: The Auto classes of models that continue a prompt: their exported tokenizer must not end a prompt with EOS.
GENERATIVE = ("AutoModelForCausalLM",)

#: Files every export holds (besides the tokenizer's).
REQUIRED = ("config.json", "model.safetensors")
#: Files every adapter-only export holds (besides the tokenizer's).
ADAPTER_REQUIRED = ("adapter_config.json", "adapter_model.safetensors")


class ExportTargetError(ValueError):
    """The export target exists and is not an empty directory (and ``force`` is off)."""


def check_target(out_dir: str | Path, force: bool = False) -> Path:
    """Refuse a target that is a file, or a non-empty directory unless ``force``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportTargetError(f"{out_dir} is a file, not a directory; give a new directory to export into.")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        held = sorted(p.name for p in out_dir.iterdir())
        shown = ", ".join(held[:6]) + (", ..." if len(held) > 6 else "")
        raise ExportTargetError(f"{out_dir} is not empty ({shown}); lmforge export does not overwrite it. Give a new "
                                "directory, or add --force to replace the files an export writes (others stay).")
    return out_dir


def export_checkpoint(ckpt_path: str | Path, out_dir: str | Path, force: bool = False, adapter_only: bool = False,
                      base: str | Path | None = None) -> Path:
    """Write ``out_dir`` so that ``AutoModelFor*.from_pretrained(out_dir)``,
    ``AutoTokenizer.from_pretrained(out_dir)`` and ``transformers.pipeline(task,
    model=out_dir)`` load it offline.

    Args:
        force: Export into a non-empty directory, replacing the files an export writes.
        adapter_only: Write a LoRA checkpoint's adapters as a ``peft`` adapter directory instead of the
            merged model.
        base: The base model's directory of a LoRA checkpoint, when it is no longer where training found it.
    """
    out_dir = check_target(out_dir, force)
    checkpoint = load_checkpoint(ckpt_path)
    saved = checkpoint[CKPT_KEY]
    if (adapter_only or base is not None) and LORA_KEY not in saved:
        option = "--adapter-only" if adapter_only else "--base"
        raise ValueError(f"{option}: {ckpt_path} holds no LoRA adapters (it was trained without model.backbone.lora); "
                         f"export the whole model without {option}.")
    if adapter_only:
        model = adapted_model_from_checkpoint(checkpoint, ckpt_path, base)
    else:
        model = model_from_checkpoint(checkpoint, ckpt_path, base)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".partial"))
    try:
        model.save_pretrained(str(staging), **({} if adapter_only else {"safe_serialization": True}))
        tokenizer = tokenizer_from_json(saved["tokenizer"], saved["tokenizer_config"])
        if saved["auto_model"] in GENERATIVE:  # a checkpoint from before TOKENIZER_FORMAT 2 appends EOS to a prompt
            tokenizer = without_appended_eos(tokenizer)
        tokenizer.save_pretrained(str(staging))
        missing = [name for name in (ADAPTER_REQUIRED if adapter_only else REQUIRED) if not (staging / name).is_file()]
        if missing:
            raise RuntimeError(f"the export wrote no {', '.join(missing)}; {out_dir} was left as it was.")
        if not out_dir.exists():
            os.rename(staging, out_dir)
        else:
            for written in staging.iterdir():
                os.replace(written, out_dir / written.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir
