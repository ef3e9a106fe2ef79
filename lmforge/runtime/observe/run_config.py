"""The run's record: everything needed to reproduce it, logged as the run's config.

``RunConfig`` is the CLI's ``SaveConfigCallback``: besides writing the resolved
recipe to ``<log_dir>/config.yaml`` (Lightning's behaviour), it hands every
logger (W&B run config, CSV/TensorBoard ``hparams.yaml``) a record with

- ``recipe``: the full resolved recipe, as ``--print_config`` shows it;
- ``lmforge``: lmforge's version, and ``versions`` of the libraries a run
  depends on (python, torch, lightning, transformers, tokenizers, datasets);
- ``plugins``: the plugins the run uses, by kind: name, class, distribution
  and version (from the plugin registry); ``installed_plugins``: every
  registered plugin as ``kind:Name distribution==version``;
- ``data_files``: each data file the DataModule reads (``data_files()``),
  with its size and sha256, hashed once when the run starts.

Figures known only at the end of a run join the record through `add_to_record` (the energy:
``lmforge.runtime.observe.energy``). It also stamps each checkpoint with the W&B run id (``checkpoint["wandb"]``),
so that ``fit --ckpt_path`` continues the same W&B run (see
`lmforge.runtime.observe.wandb`).
"""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback

from lmforge import __version__
from lmforge.core.data.files import file_sha256
from lmforge.core.registry import registry
from lmforge.runtime.observe.wandb import CKPT_KEY as WANDB_CKPT_KEY
from lmforge.runtime.observe.wandb import wandb_loggers

LIBRARIES = ("torch", "lightning", "transformers", "tokenizers", "datasets")


class RunConfig(SaveConfigCallback):
    """Saves the resolved recipe and logs the run's record to every logger."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        recipe = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        record = run_record(recipe, pl_module, trainer.datamodule)
        for logger in trainer.loggers:
            logger.log_hyperparams(record)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        for logger in wandb_loggers(trainer):
            if logger.version is not None:
                checkpoint[WANDB_CKPT_KEY] = {"run_id": logger.version, "project": logger.name}
                break


def run_record(recipe: dict[str, Any], module: Any, datamodule: Any) -> dict[str, Any]:
    """The record `RunConfig` logs (see the module docstring)."""
    files = datamodule.data_files() if hasattr(datamodule, "data_files") else {}
    return {
        "recipe": recipe,
        "lmforge": {"version": __version__},
        "versions": library_versions(),
        "plugins": used_plugins(module),
        "installed_plugins": installed_plugins(),
        "data_files": {key: [file_fingerprint(p) for p in paths] for key, paths in files.items()},
    }


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def used_plugins(module: Any) -> dict[str, list[dict[str, str | None]]]:
    """The module's plugins by kind, each with its registry entry (None where it is not registered)."""
    by_class = {info.cls: info for info in registry().all()}
    used: dict[str, list[dict[str, str | None]]] = {}
    objective = getattr(module, "objective", None)
    plugins = ([objective] if objective is not None else []) + (list(module.plugins()) if hasattr(module, "plugins") else [])
    for plugin in plugins:
        cls = type(plugin)
        info = by_class.get(cls)
        used.setdefault(plugin.kind, []).append({
            "name": cls.__name__,
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "distribution": info.dist if info else None,
            "version": info.version if info else None,
        })
    return used


def installed_plugins() -> list[str]:
    return [f"{i.kind}:{i.name} {i.dist}=={i.version}" for i in registry().all()]


def file_fingerprint(path: Path) -> dict[str, Any]:
    """Path, size and sha256 of a data file (the digest the dataset cache key already took, when it did)."""
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def add_to_record(trainer: Trainer, section: str, values: dict[str, Any]) -> None:
    """Add ``section`` to the run's record in every logger (``hparams.yaml``, the W&B config): for figures known
    only at the end of a run, such as its energy (`lmforge.runtime.observe.energy`)."""
    for logger in trainer.loggers:
        logger.log_hyperparams({section: values})
