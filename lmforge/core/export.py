"""Export an lmforge checkpoint as a Hugging Face model directory.

The checkpoint's ``lmforge`` section holds the HF config, the Auto class and
the tokenizer, so no recipe is needed. Weights are written as safetensors.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

from lmforge.core.module import CKPT_KEY
from lmforge.core.tokenizer import tokenizer_from_json

BACKBONE_PREFIX = "backbone."


def load_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """Load a Lightning checkpoint without unpickling arbitrary objects.

    Args:
        mmap: Map the tensors from the file instead of reading them (cheap when
            only the ``lmforge`` section is needed).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise ValueError(unsafe_checkpoint_message(path, exc)) from None
    if CKPT_KEY not in checkpoint:
        raise ValueError(f"{path} is not an lmforge checkpoint (it has no {CKPT_KEY!r} section).")
    return checkpoint


def unsafe_checkpoint_message(path: str | Path, exc: Exception) -> str:
    """Why a checkpoint that ``torch.load(weights_only=True)`` refused is not opened."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    reason = f"it names {found.group(1)}" if found else str(exc).strip().splitlines()[0]
    return (f"{path}: refusing to load it: it holds pickled objects other than tensors and plain Python values, "
            f"which could run code when unpickled ({reason}). lmforge checkpoints never need them; open a file "
            "with torch.load(weights_only=False) only if you trust its source.")


def backbone_state_dict(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The backbone's weights, without the plugins' and with the ``backbone.`` prefix removed."""
    state = {}
    for key, value in checkpoint["state_dict"].items():
        if key.startswith(BACKBONE_PREFIX):
            state[key[len(BACKBONE_PREFIX):].replace("_orig_mod.", "", 1)] = value
    return state


def checkpoint_config(checkpoint: dict[str, Any]) -> PretrainedConfig:
    """The backbone's HF config saved in the checkpoint."""
    config_dict = dict(checkpoint[CKPT_KEY]["config"])
    return AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)


def model_from_checkpoint(checkpoint: dict[str, Any], source: str | Path) -> PreTrainedModel:
    """The backbone as a ``transformers`` model (its saved Auto class), with the checkpoint's weights."""
    model = getattr(transformers, checkpoint[CKPT_KEY]["auto_model"]).from_config(checkpoint_config(checkpoint))
    missing, unexpected = model.load_state_dict(backbone_state_dict(checkpoint), strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    really_missing = [k for k in missing if k not in tied]
    if really_missing or unexpected:
        raise ValueError(f"{source}: weights do not fit the saved config (missing {really_missing}, "
                         f"unexpected {unexpected}).")
    return model


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
