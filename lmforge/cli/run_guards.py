"""Checks the CLI makes around a run, before it builds or loads anything it could regret.

- `checkpoint_for_recipe`: ``--ckpt_path`` is whole (its digest, `lmforge.core.checkpoint.verify_checkpoint`),
  safe to unpickle, and holds the recipe's kind of model: an MLM checkpoint under a CLM recipe is refused,
  naming both, before LightningCLI merges the checkpoint's hyperparameters into the recipe (which would
  quietly swap the recipe's backbone for the checkpoint's).
- `warn_untrained`: ``validate``/``test`` without ``--ckpt_path`` score the model as the recipe builds it.
"""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import Any

from lmforge.core.checkpoint import CKPT_KEY, LM_AUTO_MODELS, check_checkpoint_fits, torch_load, verify_checkpoint

log = logging.getLogger(__name__)

CKPT_FLAG = "--ckpt_path"


def checkpoint_for_recipe(ckpt_path: str | Path, config: Any) -> dict[str, Any]:
    """The checkpoint at ``ckpt_path`` (tensors mapped, not read), checked against the parsed recipe ``config``.

    Raises:
        CheckpointError: It is corrupt, unsafe, or holds another task or architecture than the recipe builds.
    """
    verify_checkpoint(ckpt_path, CKPT_FLAG)
    checkpoint = torch_load(ckpt_path, mmap=True, key=CKPT_FLAG)
    saved = checkpoint.get(CKPT_KEY) if isinstance(checkpoint, dict) else None
    model = _plain(config.get("model")) or {}
    objective = _objective_class(model.get("objective"))
    if saved is None or objective is None:
        return checkpoint
    backbone = _plain(model.get("backbone")) or {}
    model_type, source = recipe_model_type(backbone)
    what = f"model.objective {objective.__name__}" + (f", {source} {model_type}" if model_type else "")
    lm_to_lm = {saved.get("auto_model"), objective.auto_model} <= set(LM_AUTO_MODELS)
    check_checkpoint_fits(
        saved, objective.auto_model, model_type, what, prefix=f"{CKPT_FLAG} {ckpt_path}: ",
        fix="Resume, validate or test a checkpoint with the recipe it was trained with"
            + ("." if lm_to_lm else "; to start a classifier or tagger from its weights, set "
               "model.backbone.checkpoint to it instead (a new head is trained)."),
    )
    return checkpoint


def recipe_model_type(backbone: dict[str, Any]) -> tuple[str | None, str]:
    """The architecture (``model_type``) a parsed ``model.backbone`` builds, and the key that says so; None when
    only building it tells (``init_from``)."""
    if backbone.get("init_from"):
        return None, "model.backbone.init_from"
    if backbone.get("checkpoint"):
        path = Path(str(backbone["checkpoint"]))
        if not path.is_file():
            return None, "model.backbone.checkpoint"
        saved = torch_load(path, mmap=True, key="model.backbone.checkpoint").get(CKPT_KEY) or {}
        return (saved.get("config") or {}).get("model_type"), "model.backbone.checkpoint"
    if backbone.get("pretrained"):
        config = Path(str(backbone["pretrained"])) / "config.json"
        try:
            return json.loads(config.read_text(encoding="utf-8")).get("model_type"), "model.backbone.pretrained"
        except (OSError, ValueError):
            return None, "model.backbone.pretrained"
    return backbone.get("architecture"), "model.backbone.architecture"


def warn_untrained(subcommand: str | None, config: Any) -> None:
    """Say that ``validate``/``test`` without ``--ckpt_path`` score the model the recipe builds, untrained unless
    it starts from trained weights."""
    if subcommand not in ("validate", "test") or config.get("ckpt_path"):
        return
    backbone = _plain((_plain(config.get("model")) or {}).get("backbone")) or {}
    start = next((f"model.backbone.{k} ({backbone[k]})" for k in ("checkpoint", "pretrained", "init_from")
                  if backbone.get(k)), None)
    if start is None:
        log.warning("%s without %s scores an untrained model (the recipe's backbone, freshly initialised): the "
                    "numbers say nothing about a trained one. Pass %s runs/<name>/version_N/checkpoints/last.ckpt.",
                    subcommand, CKPT_FLAG, CKPT_FLAG)
    else:
        log.warning("%s without %s scores %s as it is, with any new head untrained.", subcommand, CKPT_FLAG, start)


def _plain(node: Any) -> Any:
    return node.as_dict() if hasattr(node, "as_dict") else node


def _objective_class(spec: Any) -> type | None:
    class_path = spec.get("class_path") if isinstance(spec, dict) else spec
    if not isinstance(class_path, str) or "." not in class_path:
        return None
    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        return None
    return cls if isinstance(getattr(cls, "auto_model", None), str) else None
