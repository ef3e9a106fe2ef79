"""`lmforge.runtime.run_dirs`: which run ``--ckpt_path last`` continues, where evaluations log, and a CSV log that
continues instead of starting over."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from jsonargparse import Namespace

from lmforge.runtime.run_dirs import (
    AppendingCSVWriter,
    newest_with_last_checkpoint,
    place_evaluation_logs,
    resume_newest_run,
)


def recipe(save_dir: Path, ckpt_path: str | None = None, name: str = "quickstart") -> Namespace:
    """A parsed recipe's relevant part: a CSVLogger and a TensorBoardLogger under ``save_dir/name``, a W&B logger."""
    loggers = [Namespace(class_path=f"lightning.pytorch.loggers.{kind}",
                         init_args=Namespace(save_dir=str(save_dir), name=name, version=None))
               for kind in ("CSVLogger", "TensorBoardLogger")]
    loggers.append(Namespace(class_path="lightning.pytorch.loggers.WandbLogger",
                             init_args=Namespace(save_dir=str(save_dir), name=name, version=None)))
    return Namespace(trainer=Namespace(logger=loggers), ckpt_path=ckpt_path)


def save_last(run_dir: Path, step: int) -> Path:
    path = run_dir / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save({"global_step": step, "state_dict": {}}, path)
    return path


def test_the_newest_run_with_a_last_checkpoint_is_continued(tmp_path: Path) -> None:
    root = tmp_path / "runs" / "quickstart"
    save_last(root / "version_2", step=7)
    save_last(root / "version_10", step=3)  # numerically the newest (not "version_2" > "version_10")
    (root / "version_11" / "checkpoints").mkdir(parents=True)  # newer, but holds no last.ckpt
    (root / "validate").mkdir()
    assert newest_with_last_checkpoint(root) == (10, root / "version_10" / "checkpoints" / "last.ckpt")

    config = recipe(tmp_path / "runs", ckpt_path="last")
    resumed = resume_newest_run(config)
    assert (resumed.version, resumed.step, resumed.run_dir) == (10, 3, root / "version_10")
    assert config.ckpt_path == str(root / "version_10" / "checkpoints" / "last.ckpt")
    versions = [logger.init_args.version for logger in config.trainer.logger]
    assert versions == [10, 10, None]  # the run-directory loggers write into version_10; W&B is left alone


def test_no_earlier_run_starts_a_new_one(tmp_path: Path) -> None:
    config = recipe(tmp_path / "runs", ckpt_path="last")
    assert resume_newest_run(config) is None
    assert [logger.init_args.version for logger in config.trainer.logger] == [None, None, None]


def test_evaluations_log_beside_the_checkpoints_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "quickstart" / "version_0"
    checkpoint = save_last(run_dir, step=5)
    config = recipe(tmp_path / "runs", ckpt_path=str(checkpoint))
    assert place_evaluation_logs(config, "validate") == run_dir / "validate"
    csv_logger, tensorboard, wandb = (logger.init_args for logger in config.trainer.logger)
    assert (csv_logger.save_dir, csv_logger.name, csv_logger.version) == (str(run_dir), "validate", "")
    assert (tensorboard.save_dir, tensorboard.name) == (str(run_dir), "validate")
    assert wandb.save_dir == str(tmp_path / "runs")


def test_a_checkpoint_outside_a_run_logs_under_the_recipe_not_as_a_version(tmp_path: Path) -> None:
    elsewhere = tmp_path / "model.ckpt"
    torch.save({"global_step": 1}, elsewhere)
    config = recipe(tmp_path / "runs", ckpt_path=str(elsewhere))
    assert place_evaluation_logs(config, "test") is None
    args = config.trainer.logger[0].init_args
    assert (args.save_dir, args.name, args.version) == (str(tmp_path / "runs" / "quickstart"), "test", None)


def test_appending_writer_keeps_the_rows_before_the_resumed_step(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["loss", "step"])
        writer.writeheader()
        writer.writerows([{"loss": 3.0, "step": 1}, {"loss": 2.0, "step": 3}, {"loss": 1.5, "step": 5}])
    writer = AppendingCSVWriter(str(tmp_path), keep_before_step=4)  # resumed from a checkpoint at step 4
    writer.log_metrics({"loss": 1.8, "val": 2.2}, step=5)
    writer.save()
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["step"], r["loss"], r["val"]) for r in rows] == [("1", "3.0", ""), ("3", "2.0", ""), ("5", "1.8", "2.2")]
