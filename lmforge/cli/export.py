"""Export an lmforge checkpoint as a Hugging Face model directory.

The checkpoint's ``lmforge`` section holds the HF config, the Auto class and
the tokenizer, so no recipe is needed. Weights are written as safetensors. A causal
LM's tokenizer encodes a prompt as itself (no end-of-text token appended), so
``pipeline("text-generation")`` continues it.
"""

from __future__ import annotations

from pathlib import Path

from lmforge.core.checkpoint import CKPT_KEY, load_checkpoint, model_from_checkpoint
from lmforge.core.data.tokenizer import tokenizer_from_json, without_appended_eos

#: The Auto classes of models that continue a prompt: their exported tokenizer must not end a prompt with EOS.
GENERATIVE = ("AutoModelForCausalLM",)


def export_checkpoint(ckpt_path: str | Path, out_dir: str | Path) -> Path:
    """Write ``out_dir`` so that ``AutoModelFor*.from_pretrained(out_dir)``,
    ``AutoTokenizer.from_pretrained(out_dir)`` and ``transformers.pipeline(task,
    model=out_dir)`` load it offline."""
    checkpoint = load_checkpoint(ckpt_path)
    saved = checkpoint[CKPT_KEY]
    model = model_from_checkpoint(checkpoint, ckpt_path)
    out_dir = Path(out_dir)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer = tokenizer_from_json(saved["tokenizer"], saved["tokenizer_config"])
    if saved["auto_model"] in GENERATIVE:  # a checkpoint from before TOKENIZER_FORMAT 2 appends EOS to a prompt
        tokenizer = without_appended_eos(tokenizer)
    tokenizer.save_pretrained(str(out_dir))
    return out_dir
