"""The checkpoint format, and trained models as starting points.

An lmforge checkpoint is a Lightning checkpoint with one more section, ``lmforge``
(`CKPT_KEY`): the backbone's HF config, its Auto class and the tokenizer (with its
chat template, when it has one), so that a model can be rebuilt, exported or used
as a teacher without the recipe. Checkpoints load with ``weights_only=True``;
nothing is downloaded.

A run with LoRA (``model.backbone.lora``) keeps only the trainable backbone weights
(the adapters) in ``state_dict``, and its section holds ``lora`` (`LORA_KEY`): the
recipe's LoRA settings, the ``peft`` adapter config, and the base model's directory
with a fingerprint of its weight files (`weights_fingerprint`). `model_from_checkpoint`
rebuilds the base from there, refusing a base whose weights differ, and applies the
adapters.

A distiller loads its teacher with `load_trained`, and ``Backbone.init_from``
builds a student from a teacher's layers. ``key`` is the recipe key that named
the path; every error names it.

This module is a leaf: it imports nothing else from lmforge.
"""

from __future__ import annotations

import hashlib
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
#: Key of the LoRA record in the ``lmforge`` section (absent for a run without LoRA).
LORA_KEY = "lora"
#: Suffixes of the files whose contents `weights_fingerprint` hashes.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


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


def model_from_checkpoint(checkpoint: dict[str, Any], source: str | Path, base: str | Path | None = None
                          ) -> PreTrainedModel:
    """The backbone as a ``transformers`` model (its saved Auto class), with the checkpoint's weights.

    A checkpoint with LoRA adapters is rebuilt from its base model and the adapters are merged into the
    weights (`adapted_model_from_checkpoint`), so that the result is a plain HF model either way.

    Args:
        base: Where the base model of a LoRA checkpoint is, when it moved from the directory recorded in
            training (its weights must still be the same).
    """
    if LORA_KEY in checkpoint[CKPT_KEY]:
        return adapted_model_from_checkpoint(checkpoint, source, base).merge_and_unload()
    model = getattr(transformers, checkpoint[CKPT_KEY]["auto_model"]).from_config(checkpoint_config(checkpoint))
    missing, unexpected = model.load_state_dict(backbone_state_dict(checkpoint), strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    really_missing = [k for k in missing if k not in tied]
    if really_missing or unexpected:
        raise ValueError(f"{source}: weights do not fit the saved config (missing {really_missing}, "
                         f"unexpected {unexpected}).")
    return model


# -- LoRA checkpoints: the base model's files and the adapters ------------------------------------


def weight_files(directory: str | Path) -> list[Path]:
    """The weight files of an HF model directory (safetensors, ``.bin``; a ``peft`` adapter's excluded)."""
    return sorted(p for p in Path(directory).iterdir()
                  if p.is_file() and p.suffix in WEIGHT_SUFFIXES and not p.name.startswith("adapter_"))


_FINGERPRINTS: dict[tuple, str] = {}


def weights_fingerprint(directory: str | Path) -> str:
    """A SHA-256 over the names and contents of a model directory's weight files (`weight_files`).

    The same weights saved again give the same fingerprint; a re-saved config does not change it. Hashed
    once per process for files of unchanged size and modification time (a checkpoint is written every few
    hundred steps, and a large base model takes seconds to hash).
    """
    files = weight_files(directory)
    if not files:
        raise FileNotFoundError(f"{directory}: no model weight files (*.safetensors, *.bin) in it.")
    key = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if key not in _FINGERPRINTS:
        digest = hashlib.sha256()
        for path in files:
            digest.update(path.name.encode() + b"\0")
            with path.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        _FINGERPRINTS[key] = "sha256:" + digest.hexdigest()
    return _FINGERPRINTS[key]


def lora_base(checkpoint: dict[str, Any], source: str | Path, base: str | Path | None = None,
              key: str = "--base") -> Path:
    """The directory of a LoRA checkpoint's base model: ``base`` if given, else the one recorded in training;
    refused unless its weights are the ones the adapters were trained on.

    Args:
        key: What the user sets to point at the base model (named in errors).
    """
    record = checkpoint[CKPT_KEY][LORA_KEY]
    recorded = record["base"]["pretrained"]
    directory = Path(base) if base is not None else Path(recorded)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{source}: its LoRA adapters need their base model, recorded as {recorded}, which is not a directory "
            f"here{f' (nor is {base})' if base is not None else ''}. Give the base model's directory with {key} DIR."
        )
    found = weights_fingerprint(directory)
    if found != record["base"]["fingerprint"]:
        raise ValueError(
            f"{source}: its LoRA adapters were trained on the base model at {recorded} (weights "
            f"{record['base']['fingerprint'][:19]}), but the weights in {directory} differ ({found[:19]}); adapters "
            f"only fit the weights they were trained on. Give that base model's directory with {key} DIR."
        )
    return directory


def adapted_model_from_checkpoint(checkpoint: dict[str, Any], source: str | Path, base: str | Path | None = None,
                                  key: str = "--base") -> Any:
    """A LoRA checkpoint's model as a ``peft.PeftModel``: the base model rebuilt from its directory
    (`lora_base`) with the checkpoint's config, and the adapters loaded.

    ``merge_and_unload()`` turns it into a plain HF model; ``save_pretrained(dir)`` writes the adapter
    directory that ``peft.PeftModel.from_pretrained(base_model, dir)`` loads.
    """
    from peft import LoraConfig, PeftModel

    saved = checkpoint[CKPT_KEY]
    record = saved[LORA_KEY]
    directory = lora_base(checkpoint, source, base, key)
    base_model = getattr(transformers, saved["auto_model"]).from_pretrained(
        str(directory), config=checkpoint_config(checkpoint), local_files_only=True)
    config = LoraConfig.from_peft_type(**record["adapter_config"])
    config.base_model_name_or_path = str(directory.resolve())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="fan_in_fan_out is set to")  # gpt2's Conv1D; peft adapts
        model = PeftModel(base_model, config)
    adapters = backbone_state_dict(checkpoint)
    inner = model.base_model.model  # the HF model with the LoRA layers, named as in training
    expected = {n for n, p in inner.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(expected - set(adapters)), sorted(set(adapters) - set(inner.state_dict()))
    if missing or unexpected:
        raise ValueError(f"{source}: the adapter weights do not fit the adapters its LoRA settings make (missing "
                         f"{missing[:3]}, unexpected {unexpected[:3]}).")
    inner.load_state_dict(adapters, strict=False)
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
