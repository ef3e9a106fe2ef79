"""Export an lmforge checkpoint as a Hugging Face model directory.

The checkpoint's ``lmforge`` section holds the HF config, the Auto class and
the tokenizer, so no recipe is needed. Weights are written as safetensors.
"""

from __future__ import annotations

from pathlib import Path

from lmforge.core.checkpoint import CKPT_KEY, load_checkpoint, model_from_checkpoint
from lmforge.core.data.tokenizer import tokenizer_from_json


def export_checkpoint(ckpt_path: str | Path, out_dir: str | Path) -> Path:
    """Write ``out_dir`` so that ``AutoModelFor*.from_pretrained(out_dir)``,
    ``AutoTokenizer.from_pretrained(out_dir)`` and ``transformers.pipeline(task,
    model=out_dir)`` load it offline."""
    checkpoint = load_checkpoint(ckpt_path)
    saved = checkpoint[CKPT_KEY]
    model = model_from_checkpoint(checkpoint, ckpt_path)
    out_dir = Path(out_dir)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer_from_json(saved["tokenizer"], saved["tokenizer_config"]).save_pretrained(str(out_dir))
    return out_dir
