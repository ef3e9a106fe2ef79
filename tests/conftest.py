"""Test-wide settings: offline, a private cache, small shared fixtures (their pieces are in tiny.py)."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from observed import observed_run  # noqa: E402,F401  (a shared fixture: one small observed run)
from tiny import write_corpus  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["LMFORGE_CACHE"] = str(tmp_path_factory.mktemp("lmforge-cache"))


@pytest.fixture
def corpus(tmp_path: Path) -> dict[str, Path]:
    """``train`` and ``val`` text files of a tiny corpus."""
    return {"train": write_corpus(tmp_path / "train.txt", 300, seed=1),
            "val": write_corpus(tmp_path / "val.txt", 40, seed=2)}


@pytest.fixture
def one_thread():
    """Torch on one thread for the test (tiny models run faster so than on two contended cores), then restored."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="module")
def _fresh_wandb_service_per_module():
    """Each test module that logs to W&B gets its own wandb service: a service left from an earlier
    module's offline runs can stop writing the next module's run files."""
    yield
    import sys

    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()
