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

**Integrity.** A checkpoint written by lmforge has its sha256 beside it, in
``<file>.sha256`` (`DIGEST_SUFFIX`, the format of ``sha256sum``, so
``sha256sum -c last.ckpt.sha256`` checks it too). Every load checks it first
(`verify_checkpoint`): a file whose bytes changed after it was written (flipped,
truncated, overwritten) is refused as corrupt (`CorruptCheckpointError`), never
read. A checkpoint without a digest (written before lmforge 0.2, or by another
tool) still loads, with a note, after the CRC-32 of every member of its zip
archive is checked (which catches truncation and most damage). A file that is
not a checkpoint at all (random bytes) is called that, and one that holds
pickled objects other than tensors and plain values is refused as unsafe
(`UnsafeCheckpointError`).

This module is a leaf: it imports nothing else from lmforge.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
import warnings
import zipfile
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
#: The digest of ``last.ckpt`` is in ``last.ckpt.sha256``, one ``<sha256>  <file name>`` line (sha256sum's format).
DIGEST_SUFFIX = ".sha256"

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message starts with the file (callers put the key in front)."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint whose bytes are not those that were written: flipped, truncated, or not a checkpoint at all."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that holds pickled objects other than tensors and plain values (they could run code)."""


def load_checkpoint(path: str | Path, mmap: bool = False, key: str = "") -> dict[str, Any]:
    """Load a Lightning checkpoint without unpickling arbitrary objects, after checking its integrity.

    Args:
        mmap: Map the tensors from the file instead of reading them (cheap when
            only the ``lmforge`` section is needed).
        key: What named the file (``"--ckpt_path"``, a recipe key), put in front of every error.
    """
    path = Path(path)
    prefix = f"{key}: " if key and not key.startswith("-") else (f"{key} " if key else "")
    if not path.is_file():
        raise FileNotFoundError(f"{prefix}checkpoint not found: {path}")
    verify_checkpoint(path, key)
    checkpoint = torch_load(path, mmap=mmap, key=key)
    if not isinstance(checkpoint, dict) or CKPT_KEY not in checkpoint:
        raise CheckpointError(f"{prefix}{path} is not an lmforge checkpoint (it has no {CKPT_KEY!r} section).")
    return checkpoint


def torch_load(path: str | Path, mmap: bool = False, key: str = "", map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with its failures named: unsafe content, or a damaged file."""
    prefix = f"{key}: " if key and not key.startswith("-") else (f"{key} " if key else "")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        if _unsupported_global(exc):
            raise UnsafeCheckpointError(prefix + unsafe_checkpoint_message(path, exc)) from None
        raise CorruptCheckpointError(prefix + _damaged_message(path, exc)) from None
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise CorruptCheckpointError(prefix + _damaged_message(path, exc)) from None


def _unsupported_global(exc: Exception) -> bool:
    return "Unsupported global" in str(exc) or "unsupported global" in str(exc).lower()


def _damaged_message(path: str | Path, exc: Exception) -> str:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (f"{path} is not a readable checkpoint: it is truncated, damaged, or not a checkpoint at all "
            f"(torch.load: {reason}). {_other_checkpoints(path)}")


def _other_checkpoints(path: str | Path) -> str:
    path = Path(path)
    others = sorted(p.name for p in path.parent.glob("*.ckpt") if p.name != path.name) if path.parent.is_dir() else []
    return (f"Use another checkpoint ({', '.join(others)} in {path.parent})." if others
            else "Use another checkpoint, or train again.")


# -- integrity: a digest beside each checkpoint ------------------------------------------------------


def digest_path(path: str | Path) -> Path:
    """Where the digest of the checkpoint at ``path`` is kept (beside the file a symlink points to)."""
    path = Path(path)
    target = path.resolve() if path.is_symlink() else path
    return target.with_name(target.name + DIGEST_SUFFIX)


def digest_lines(name: str, digests: list[str]) -> str:
    """The text of a digest file that accepts each of ``digests`` for the file ``name``."""
    return "".join(f"{d}  {name}\n" for d in dict.fromkeys(digests))


def recorded_digests(path: str | Path) -> list[str] | None:
    """The sha256 digests recorded for ``path`` (usually one), or None when it has no digest file."""
    sidecar = digest_path(path)
    try:
        text = sidecar.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    name = sidecar.name[: -len(DIGEST_SUFFIX)]
    found = [m.group(1).lower() for m in re.finditer(r"^([0-9a-fA-F]{64}) [ *](.+)$", text, flags=re.M)
             if m.group(2).strip() == name]
    return found


def file_digest(path: str | Path, chunk: int = 1 << 22) -> str:
    """The sha256 of a file's bytes (about 1.6 s per GB on these machines)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


#: Files already verified in this process, by identity, size and change time: a run loads one checkpoint
#: several times (its tokenizer, its config, its weights), and a large one costs seconds to hash.
_VERIFIED: set[tuple[str, int, int, int, int]] = set()
_NOTED: set[str] = set()


def verify_checkpoint(path: str | Path, key: str = "") -> None:
    """Refuse a checkpoint whose bytes differ from those written (see the module docstring).

    Raises:
        CorruptCheckpointError: The file's sha256 is not the recorded one; or, without a digest, its zip
            archive is truncated or a member fails its CRC-32 check.
    """
    path = Path(path)
    stat = os.stat(path)
    identity = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if identity in _VERIFIED:
        return
    prefix = f"{key}: " if key and not key.startswith("-") else (f"{key} " if key else "")
    recorded = recorded_digests(path)
    if recorded is not None:
        actual = file_digest(path)
        if actual not in recorded:
            raise CorruptCheckpointError(
                f"{prefix}{path} is corrupt: its sha256 is {actual[:16]}..., not the {recorded[0][:16] if recorded else '?'}"
                f"... recorded in {digest_path(path).name} when it was written, so its bytes changed since (a disk "
                f"or copy error, a truncated transfer, an edit). It was not loaded. {_other_checkpoints(path)}"
            )
    else:
        _check_zip(path, prefix)
        if str(path) not in _NOTED:
            _NOTED.add(str(path))
            log.warning("%s%s has no digest file (%s): it was written before lmforge 0.2 or by another tool, so only "
                        "its zip checksums were checked.", prefix, path, digest_path(path).name)
    _VERIFIED.add(identity)


def _check_zip(path: Path, prefix: str) -> None:
    """Without a recorded digest: the zip archive torch.save writes must be whole and pass its CRC-32 checks."""
    if not zipfile.is_zipfile(path):  # torch.save has written zip archives since torch 1.6
        raise CorruptCheckpointError(
            f"{prefix}{path} is not a readable checkpoint: it is not the zip archive torch.save writes, so it is "
            f"truncated (the archive's directory at its end is missing) or not a checkpoint at all. It was not "
            f"loaded. {_other_checkpoints(path)}"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CorruptCheckpointError(f"{prefix}{_damaged_message(path, exc)}") from None
    if bad is not None:
        raise CorruptCheckpointError(
            f"{prefix}{path} is corrupt: its member {bad} fails its CRC-32 check, so its bytes changed after it was "
            f"written. It was not loaded. {_other_checkpoints(path)}"
        )


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
    return checkpoint_config(load_checkpoint(found, mmap=True, key=key))


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
    checkpoint = load_checkpoint(found, key=key)
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

    saved = load_checkpoint(found, mmap=True, key=key)[CKPT_KEY]["tokenizer"]
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


# -- a checkpoint for this recipe -------------------------------------------------------------------

#: Auto classes of language-modelling heads: a checkpoint of one cannot start or continue the other.
LM_AUTO_MODELS = ("AutoModelForCausalLM", "AutoModelForMaskedLM")


def describe_saved(saved: dict[str, Any]) -> str:
    """``"a bert AutoModelForMaskedLM"``: what the ``lmforge`` section of a checkpoint holds."""
    model_type = (saved.get("config") or {}).get("model_type", "?")
    return ("an " if model_type[:1].lower() in "aeiou" else "a ") + f"{model_type} {saved.get('auto_model', '?')}"


def check_checkpoint_fits(saved: dict[str, Any], auto_model: str, model_type: str | None, what: str,
                          prefix: str, fix: str) -> None:
    """Refuse a checkpoint whose task (Auto class) or architecture (``model_type``) differs from the recipe's.

    Args:
        saved: The checkpoint's ``lmforge`` section.
        auto_model: The Auto class the recipe's objective builds.
        model_type: The architecture the recipe builds, or None when it takes it from elsewhere.
        what: How the recipe builds it, for the message (``"model.objective CausalLM, model.backbone gpt2"``).
        prefix: Put in front of the message (the key and file).
        fix: What to do instead.
    """
    theirs_auto = saved.get("auto_model")
    theirs_type = (saved.get("config") or {}).get("model_type")
    if theirs_auto == auto_model and (model_type is None or theirs_type is None or theirs_type == model_type):
        return
    ours = f"{model_type} {auto_model}" if model_type else auto_model
    ours = ("an " if ours[0].lower() in "aeiou" else "a ") + ours
    raise CheckpointError(f"{prefix}the checkpoint holds {describe_saved(saved)}, but the recipe builds {ours} "
                          f"({what}). {fix}")
