"""Export an lmforge checkpoint as a Hugging Face model directory.

The checkpoint's ``lmforge`` section holds the HF config, the Auto class and
the tokenizer, so no recipe is needed. Weights are written as safetensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoConfig, PreTrainedTokenizerFast

from lmforge.core.module import CKPT_KEY

BACKBONE_PREFIX = "backbone."


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a Lightning checkpoint without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if CKPT_KEY not in checkpoint:
        raise ValueError(f"{path} is not an lmforge checkpoint (it has no {CKPT_KEY!r} section).")
    return checkpoint


def backbone_state_dict(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The backbone's weights, without the plugins' and with the ``backbone.`` prefix removed."""
    state = {}
    for key, value in checkpoint["state_dict"].items():
        if key.startswith(BACKBONE_PREFIX):
            state[key[len(BACKBONE_PREFIX):].replace("_orig_mod.", "", 1)] = value
    return state


def export_checkpoint(ckpt_path: str | Path, out_dir: str | Path) -> Path:
    """Write ``out_dir`` so that ``AutoModelFor*.from_pretrained(out_dir)`` and
    ``AutoTokenizer.from_pretrained(out_dir)`` load it offline."""
    checkpoint = load_checkpoint(ckpt_path)
    saved = checkpoint[CKPT_KEY]
    config_dict = dict(saved["config"])
    config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
    model = getattr(transformers, saved["auto_model"]).from_config(config)
    missing, unexpected = model.load_state_dict(backbone_state_dict(checkpoint), strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    really_missing = [k for k in missing if k not in tied]
    if really_missing or unexpected:
        raise ValueError(f"{ckpt_path}: weights do not fit the saved config (missing {really_missing}, "
                         f"unexpected {unexpected}).")
    out_dir = Path(out_dir)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer_json = out_dir / "tokenizer.json"
    tokenizer_json.write_text(saved["tokenizer"], encoding="utf-8")
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_json), **saved["tokenizer_config"])
    tokenizer.save_pretrained(str(out_dir))
    return out_dir
