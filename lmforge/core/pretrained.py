"""Trained models as starting points: a local HF directory or an lmforge checkpoint.

A distiller loads its teacher with these, and ``Backbone.init_from`` builds a
student from a teacher's layers. Nothing is downloaded; checkpoints load with
``weights_only=True``. ``key`` is the recipe key that named the path; every
error names it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from lmforge.core.export import checkpoint_config, load_checkpoint, model_from_checkpoint
from lmforge.core.module import CKPT_KEY


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
