"""Where a command's run directory is: resuming the newest run, and evaluations beside the checkpoint's run.

- ``fit --ckpt_path last`` continues the newest run of the recipe: the highest ``<save_dir>/<name>/version_N``
  whose ``checkpoints/last.ckpt`` exists (`resume_newest_run`). The run's loggers get that version, so the
  resumed run writes into the same directory: its checkpoints, and its ``metrics.csv`` continued
  (`AppendingCSVWriter`, which keeps the rows logged before the checkpoint's step).
- ``validate`` and ``test`` create no ``version_N``: they log into ``<run>/validate/`` (``<run>/test/``) beside
  the checkpoint's run when the checkpoint lies in a run's ``checkpoints/``, else into
  ``<save_dir>/<name>/validate/version_K`` (`place_evaluation_logs`). Later training runs keep their numbering,
  and each evaluation appends its rows to that directory's ``metrics.csv``.

Only the loggers that write a run directory (``CSVLogger``, ``TensorBoardLogger``) are placed; others (W&B)
are left as the recipe sets them.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

RUN_LOGGERS = ("CSVLogger", "TensorBoardLogger")
LAST = "last.ckpt"
DEFAULT_NAME = "lightning_logs"  # Lightning's default logger name


@dataclass
class Resumed:
    """The run ``fit --ckpt_path last`` continues."""

    checkpoint: Path
    run_dir: Path
    version: int
    step: int | None


def run_logger_args(trainer_config: Any) -> list[Any]:
    """The ``init_args`` of the recipe's loggers that write a run directory, in recipe order."""
    logger = trainer_config.get("logger") if trainer_config is not None else None
    specs = logger if isinstance(logger, list) else [logger]
    return [spec["init_args"] for spec in specs
            if hasattr(spec, "get") and isinstance(spec.get("class_path"), str)
            and spec["class_path"].rsplit(".", 1)[-1] in RUN_LOGGERS and spec.get("init_args") is not None]


def logger_root(args: Any) -> Path:
    """``<save_dir>/<name>``: where a logger's ``version_N`` directories lie."""
    name = args.get("name", DEFAULT_NAME)
    root = Path(str(args.get("save_dir") or "."))
    return root / name if name else root


def newest_with_last_checkpoint(root: Path) -> tuple[int, Path] | None:
    """``(N, root/version_N/checkpoints/last.ckpt)`` for the highest N that has one (a file, or a directory
    for a sharded checkpoint); None when no version has."""
    versions = []
    for path in root.glob("version_*") if root.is_dir() else []:
        found = re.fullmatch(r"version_(\d+)", path.name)
        if found and (path / "checkpoints" / LAST).exists():
            versions.append((int(found.group(1)), path / "checkpoints" / LAST))
    return max(versions) if versions else None


def resume_newest_run(config: Any) -> Resumed | None:
    """Point ``ckpt_path: last`` and the run-directory loggers of a parsed ``fit`` recipe at the newest run with a
    last checkpoint (in place); None, and ``ckpt_path`` cleared, when there is none."""
    specs = run_logger_args(config.get("trainer"))
    for args in specs:
        root = logger_root(args)
        found = newest_with_last_checkpoint(root)
        if found is None:
            continue
        version, checkpoint = found
        for other in specs:
            if logger_root(other) == root:
                other["version"] = version
        config["ckpt_path"] = str(checkpoint)
        return Resumed(checkpoint, checkpoint.parent.parent, version, checkpoint_step(checkpoint))
    return None


def searched_roots(config: Any) -> list[Path]:
    return [logger_root(args) for args in run_logger_args(config.get("trainer"))]


def checkpoint_step(path: Path) -> int | None:
    """The global step saved in a checkpoint file (None for a sharded checkpoint directory)."""
    if not Path(path).is_file():
        return None
    import torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("global_step"))
    except Exception:  # an unreadable checkpoint is reported when it is loaded, with its own message
        return None


def checkpoint_run_dir(ckpt_path: str | os.PathLike[str] | None) -> Path | None:
    """The run directory a checkpoint belongs to (``<run>/checkpoints/<file>``), or None."""
    if not ckpt_path:
        return None
    path = Path(str(ckpt_path))
    if path.parent.name == "checkpoints" and path.parent.parent.is_dir():
        return path.parent.parent
    return None


def place_evaluation_logs(config: Any, subcommand: str) -> Path | None:
    """Point the run-directory loggers of a parsed ``validate``/``test`` recipe away from a new ``version_N`` (in
    place): into ``<run>/<subcommand>/`` beside the checkpoint's run, else ``<root>/<subcommand>/version_K``.

    Returns the directory when it is known now (beside a run), else None.
    """
    run_dir = checkpoint_run_dir(config.get("ckpt_path"))
    for args in run_logger_args(config.get("trainer")):
        if run_dir is not None:
            args["save_dir"], args["name"], args["version"] = str(run_dir), subcommand, ""
        else:
            args["save_dir"], args["name"] = str(logger_root(args)), subcommand
    return run_dir / subcommand if run_dir is not None else None


class AppendingCSVWriter(ExperimentWriter):
    """Lightning's CSV writer that continues an existing ``metrics.csv`` instead of deleting it.

    Args:
        keep_before_step: Keep only the rows logged before this step (a run resumed from a checkpoint at this
            step logs the later steps again); None keeps every row.
    """

    def __init__(self, log_dir: str, keep_before_step: int | None = None) -> None:
        self.keep_before_step = keep_before_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            reader = csv.DictReader(file)
            keys = list(reader.fieldnames or [])
            rows = [r for r in reader if self.keep_before_step is None or _step(r) < self.keep_before_step]
        self.metrics_keys = sorted(keys)
        with self._fs.open(self.metrics_file_path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)


def _step(row: dict[str, str]) -> float:
    try:
        return float(row.get("step") or 0)
    except ValueError:
        return 0.0


class AppendingCSVLogger(CSVLogger):
    """``CSVLogger`` whose writer is an `AppendingCSVWriter`, created (with its directory) at the first log."""

    keep_before_step: int | None = None

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingCSVWriter(self.log_dir, self.keep_before_step)
        return self._experiment


def continue_csv_logs(loggers: list[Any], keep_before_step: int | None = None) -> None:
    """Have each ``CSVLogger`` append to its directory's ``metrics.csv`` (call before anything is logged).

    The logger stays the recipe's object (its arguments, its ``isinstance``); only its writer changes, and the
    directory is still created when the first value is logged.
    """
    for logger in loggers:
        if type(logger) is CSVLogger and logger._experiment is None:
            logger.__class__ = AppendingCSVLogger
            logger.keep_before_step = keep_before_step
