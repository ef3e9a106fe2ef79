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
"""

from __future__ import annotations

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


def export_checkpoint(ckpt_path: str | Path, out_dir: str | Path, adapter_only: bool = False,
                      base: str | Path | None = None) -> Path:
    """Write ``out_dir`` so that ``AutoModelFor*.from_pretrained(out_dir)``,
    ``AutoTokenizer.from_pretrained(out_dir)`` and ``transformers.pipeline(task,
    model=out_dir)`` load it offline.

    Args:
        adapter_only: Write a LoRA checkpoint's adapters as a ``peft`` adapter directory instead of the
            merged model.
        base: The base model's directory of a LoRA checkpoint, when it is no longer where training found it.
    """
    checkpoint = load_checkpoint(ckpt_path)
    saved = checkpoint[CKPT_KEY]
    if (adapter_only or base is not None) and LORA_KEY not in saved:
        option = "--adapter-only" if adapter_only else "--base"
        raise ValueError(f"{option}: {ckpt_path} holds no LoRA adapters (it was trained without model.backbone.lora); "
                         f"export the whole model without {option}.")
    out_dir = Path(out_dir)
    if adapter_only:
        adapted_model_from_checkpoint(checkpoint, ckpt_path, base).save_pretrained(str(out_dir))
    else:
        model = model_from_checkpoint(checkpoint, ckpt_path, base)
        model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer = tokenizer_from_json(saved["tokenizer"], saved["tokenizer_config"])
    if saved["auto_model"] in GENERATIVE:  # a checkpoint from before TOKENIZER_FORMAT 2 appends EOS to a prompt
        tokenizer = without_appended_eos(tokenizer)
    tokenizer.save_pretrained(str(out_dir))
    return out_dir
