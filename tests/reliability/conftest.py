"""Fixtures of the reliability suite (helpers live in reliability_kit.py)."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from reliability_kit import CANARY, SECRET_KEY, lmforge, tiny_project


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny project as the working directory, with its own lmforge cache (``cache/``)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sys, "argv", ["lmforge"])
    tiny_project(tmp_path)
    return tmp_path


@dataclass
class TinyRun:
    root: Path  # the working directory: tiny.yaml, data, runs/, python.log
    fit: Path  # runs/tiny/version_0
    resumed: Path  # runs/tiny/version_1: `fit --ckpt_path .../last.ckpt`
    loads: list[dict]  # keyword arguments of every torch.load call while resuming


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    """The tiny recipe fitted (4 steps) and resumed (to 6) through the CLI, with W&B logging offline, a W&B API
    key and a canary in the environment, and every Python log record at INFO and above kept in python.log."""
    import torch

    root = tmp_path_factory.mktemp("tiny-run")
    tiny_project(root)
    handler = logging.FileHandler(root / "python.log")
    handler.setLevel(logging.INFO)
    logger = logging.getLogger()
    level = logger.level
    loads: list[dict] = []
    real_load = torch.load

    def spy_load(*args, **kwargs):
        loads.append(dict(kwargs))
        return real_load(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for name, value in {"LMFORGE_CACHE": str(root / "cache"), "WANDB_MODE": "offline", "WANDB_SILENT": "true",
                            "WANDB_API_KEY": SECRET_KEY, "LMFORGE_TEST_CANARY": CANARY}.items():
            mp.setenv(name, value)
        mp.setattr(sys, "argv", ["lmforge"])
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            args = ["fit", "--config", "tiny.yaml", "--config", "overlays/wandb"]
            assert lmforge(*args) == 0
            last = root / "runs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
            mp.setattr(torch, "load", spy_load)
            assert lmforge(*args, "--trainer.max_steps", "6", "--ckpt_path", str(last)) == 0
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
            handler.close()
    return TinyRun(root, root / "runs" / "tiny" / "version_0", root / "runs" / "tiny" / "version_1", loads)
