"""Weights & Biases through Lightning's ``WandbLogger``: names, tags, resume, no login prompt.

`prepare_loggers` runs in the CLI after the recipe is parsed and before the
loggers exist. It fills what a recipe leaves null (``overlays/wandb.yaml``
leaves them null on purpose):

- ``name`` of a ``CSVLogger``/``WandbLogger``: the recipe's name (the first
  ``--config`` file's name that is not an overlay);
- W&B ``project``: ``$WANDB_PROJECT`` or ``lmforge``; W&B ``tags``: the
  recipe's plugin names, added to any the recipe gives;
- W&B ``id`` on ``fit --ckpt_path``: the run id stored in the checkpoint
  (``RunConfig`` writes ``checkpoint["wandb"]``), with ``resume="allow"``,
  so a resumed run continues the same W&B run.

It also makes sure W&B never stops at a login prompt: with no API key
(``WANDB_API_KEY`` or a ``.netrc`` entry from ``wandb login``) and no
``WANDB_MODE``, it sets ``WANDB_MODE=offline`` and warns; the run is written
under ``<save_dir>/wandb/offline-run-*`` and ``wandb sync`` uploads it later.
"""

from __future__ import annotations

import importlib.util
import logging
import netrc
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lmforge.core.hooks import RECIPE_KEYS

log = logging.getLogger(__name__)

#: Key of the W&B run id in a Lightning checkpoint.
CKPT_KEY = "wandb"
DEFAULT_PROJECT = "lmforge"
WANDB_LOGGER = "WandbLogger"
NAMED_LOGGERS = ("CSVLogger", "TensorBoardLogger", WANDB_LOGGER)
#: Recipe keys under ``model`` that hold plugins.
PLUGIN_KEYS = tuple(RECIPE_KEYS.values())


def wandb_loggers(trainer: Any) -> list[Any]:
    """The trainer's ``WandbLogger`` instances (none when wandb is not installed or not used)."""
    from lightning.pytorch.loggers import WandbLogger

    return [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]


def has_wandb_credentials() -> bool:
    """Whether wandb can log in without asking: an API key in the environment or in ``.netrc``."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or str(Path.home() / ".netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def ensure_no_login_prompt() -> None:
    """Log offline, and say so, when wandb would otherwise prompt for a login."""
    if os.environ.get("WANDB_MODE") or has_wandb_credentials():
        return
    os.environ["WANDB_MODE"] = "offline"
    log.warning(
        "W&B: no API key (WANDB_API_KEY or `wandb login`) and WANDB_MODE is not set, so this run is logged "
        "offline under the logger's save_dir/wandb/. Upload it later with `wandb sync <offline-run dir>`, or "
        "set WANDB_MODE=online/offline/disabled to choose."
    )


def checkpoint_run_id(ckpt_path: str | Path) -> str | None:
    """The W&B run id stored in a checkpoint, or None (its integrity checked first, as on every load)."""
    from lmforge.core.checkpoint import torch_load, verify_checkpoint  # torch only when a checkpoint is read

    verify_checkpoint(ckpt_path, "--ckpt_path")
    checkpoint = torch_load(ckpt_path, mmap=True, key="--ckpt_path")
    return (checkpoint.get(CKPT_KEY) or {}).get("run_id") if isinstance(checkpoint, dict) else None


def recipe_name(config_files: Iterable[Any]) -> str | None:
    """The name of the first ``--config`` file that is not an overlay (``quickstart.yaml`` -> ``quickstart``)."""
    for path in config_files or []:
        path = Path(str(path))
        if path.parent.name != "overlays":
            return path.stem
    return None


def plugin_names(model_config: Any) -> list[str]:
    """Class names of the plugins in a parsed ``model`` section, in recipe order."""
    names: list[str] = []
    for key in PLUGIN_KEYS:
        value = model_config.get(key) if model_config is not None else None
        for spec in value if isinstance(value, list) else [value]:
            class_path = spec.get("class_path") if hasattr(spec, "get") else spec
            if isinstance(class_path, str):
                names.append(class_path.rsplit(".", 1)[-1])
    return list(dict.fromkeys(names))


def _logger_specs(trainer_config: Any) -> list[Any]:
    logger = trainer_config.get("logger") if trainer_config is not None else None
    specs = logger if isinstance(logger, list) else [logger]
    return [s for s in specs if hasattr(s, "get") and isinstance(s.get("class_path"), str)]


def prepare_loggers(config: Any, subcommand: str | None) -> None:
    """Fill the null logger fields of a parsed recipe (see the module docstring), in place."""
    specs = _logger_specs(config.get("trainer"))
    name = recipe_name(config.get("config"))
    wandb_specs = []
    for spec in specs:
        kind = spec["class_path"].rsplit(".", 1)[-1]
        args = spec.get("init_args")
        if kind not in NAMED_LOGGERS or args is None:
            continue
        if "name" in args and args["name"] is None and name is not None:
            args["name"] = name
        if kind == WANDB_LOGGER:
            wandb_specs.append(args)
    if not wandb_specs:
        return
    if importlib.util.find_spec("wandb") is None:
        raise ModuleNotFoundError("trainer.logger: WandbLogger needs the wandb package; install it with "
                                  "`pip install 'lmforge[wandb]'` or drop overlays/wandb.")
    ensure_no_login_prompt()
    ckpt_path = config.get("ckpt_path") if subcommand == "fit" else None
    run_id = checkpoint_run_id(ckpt_path) if ckpt_path and Path(str(ckpt_path)).is_file() else None
    tags = plugin_names(config.get("model"))
    for args in wandb_specs:
        if args.get("project") is None:
            args["project"] = os.environ.get("WANDB_PROJECT", DEFAULT_PROJECT)
        args["tags"] = list(dict.fromkeys([*(args.get("tags") or []), *tags]))
        if run_id is not None and args.get("id") is None and args.get("version") is None:
            args["id"] = run_id
            args["resume"] = "allow"
            log.info("W&B: continuing run %s from %s", run_id, ckpt_path)


def finish_wandb(trainer: Any) -> None:
    """Finish the W&B runs a CLI command started, so that their files are complete when it returns."""
    if trainer is None or not wandb_loggers(trainer):
        return
    import wandb

    if wandb.run is not None:
        wandb.finish()
