"""Export an lmforge checkpoint as a Hugging Face model directory.

The checkpoint's ``lmforge`` section holds the HF config, the Auto class and
the tokenizer, so no recipe is needed. Weights are written as safetensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import transformers
from tokenizers import Tokenizer
from transformers import AutoConfig, PreTrainedModel, PreTrainedTokenizerFast

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


def load_model(ckpt_path: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """The HF model (in eval mode) and tokenizer of an lmforge checkpoint, as ``lmforge export`` writes them.

    The HF config holds what the objective put there (``id2label``/``label2id``
    and ``problem_type`` of a classifier), so the model knows its label names.
    """
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
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(saved["tokenizer"]),
                                        **saved["tokenizer_config"])
    return model.eval(), tokenizer


def export_checkpoint(ckpt_path: str | Path, out_dir: str | Path) -> Path:
    """Write ``out_dir`` so that ``AutoModelFor*.from_pretrained(out_dir)``,
    ``AutoTokenizer.from_pretrained(out_dir)`` and ``transformers.pipeline(task,
    model=out_dir)`` load it offline."""
    model, tokenizer = load_model(ckpt_path)
    out_dir = Path(out_dir)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    return out_dir
