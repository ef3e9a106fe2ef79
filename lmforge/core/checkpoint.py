"""The checkpoint format, and trained models as starting points.

An lmforge checkpoint is a Lightning checkpoint with one more section, ``lmforge``
(`CKPT_KEY`): the backbone's HF config, its Auto class and the tokenizer, so that
a model can be rebuilt, exported or used as a teacher without the recipe.
Checkpoints load with ``weights_only=True``; nothing is downloaded.

A distiller loads its teacher with `load_trained`, and ``Backbone.init_from``
builds a student from a teacher's layers. ``key`` is the recipe key that named
the path; every error names it.

This module is a leaf: it imports nothing else from lmforge.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

#: Key of lmforge's own section in a Lightning checkpoint: everything needed to
#: rebuild the backbone without the recipe (HF config, Auto class, tokenizer).
CKPT_KEY = "lmforge"
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



# -- trained models as starting points --------------------------------------------------------


def existing(path: str | Path, key: str, hint: str = "") -> Path:
    """``path`` if it exists; otherwise an error that says what ``key`` must name."""
    found = Path(path)
    if not found.exists():
        raise FileNotFoundError(
            f"{key}: must be a local HF model directory or an lmforge checkpoint (.ckpt), got {str(path)!r}, "
            f"which does not exist.{' ' + hint if hint else ''}"
        )
    return found


def trained_config(path: str | Path, key: str, hint: str = "") -> PretrainedConfig:
    """The HF config of the model at ``path`` (the weights are not read)."""
    found = existing(path, key, hint)
    if found.is_dir():
        return AutoConfig.from_pretrained(str(found), local_files_only=True)
    return checkpoint_config(load_checkpoint(found, mmap=True))


def load_trained(path: str | Path, auto_model: str, key: str, dtype: torch.dtype | None = None,
                 hint: str = "") -> PreTrainedModel:
    """The model at ``path`` as ``transformers.<auto_model>``, on the CPU.

    Args:
        auto_model: The Auto class the run's objective uses; a checkpoint saved
            with another one (an MLM teacher for a causal student) is refused.
        dtype: Cast the weights (None keeps the saved dtype).
    """
    found = existing(path, key, hint)
    if found.is_dir():
        return getattr(transformers, auto_model).from_pretrained(str(found), local_files_only=True, dtype=dtype)
    checkpoint = load_checkpoint(found)
    saved = checkpoint[CKPT_KEY]["auto_model"]
    if saved != auto_model:
        raise ValueError(
            f"{key}: the model in {found} must be a {auto_model} (this run's objective), got a {saved}. "
            "Use a model trained with the same kind of objective (e.g. clm-pretrain's checkpoint for CausalLM)."
        )
    model = model_from_checkpoint(checkpoint, found)
    return model.to(dtype) if dtype is not None else model


def trained_vocabulary(path: str | Path, key: str) -> dict[str, int] | None:
    """Token -> id of the tokenizer saved with the model at ``path``; None when it has none."""
    found = existing(path, key)
    if found.is_dir():
        try:
            return AutoTokenizer.from_pretrained(str(found), local_files_only=True).get_vocab()
        except (OSError, ValueError):  # a model directory without tokenizer files
            return None
    from tokenizers import Tokenizer

    saved = load_checkpoint(found, mmap=True)[CKPT_KEY]["tokenizer"]
    return Tokenizer.from_str(saved).get_vocab(with_added_tokens=True)


def check_vocabulary(path: str | Path, tokenizer: PreTrainedTokenizerBase, key: str) -> None:
    """Refuse a model at ``path`` whose tokenizer differs from this run's ``tokenizer``."""
    theirs = trained_vocabulary(path, key)
    if theirs is None:
        warnings.warn(f"{key}: {path} has no tokenizer files, so lmforge cannot check that it shares this run's "
                      "vocabulary; make sure data.init_args.tokenizer is the one it was trained with.", stacklevel=2)
        return
    ours = tokenizer.get_vocab()
    if theirs == ours:
        return
    if len(theirs) != len(ours):
        detail = f"{len(theirs)} tokens vs this run's {len(ours)}"
    else:
        token = next(t for t in sorted(ours, key=ours.get) if theirs.get(t) != ours[t])
        detail = f"both {len(ours)} tokens, but {token!r} is id {ours[token]} here and {theirs.get(token)} there"
    raise ValueError(
        f"{key}: the tokenizer of {path} must equal this run's tokenizer (data.init_args.tokenizer), got a different "
        f"vocabulary ({detail}). Set data.init_args.tokenizer.path to the teacher's tokenizer: the model directory "
        "itself, or runs/<name>/version_N/tokenizer for an lmforge run."
    )
