"""Test-wide settings: offline, a private cache, small shared fixtures."""

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

WORDS = ("the cat sat on a mat and the dog ran to the park while birds sang in tall green trees "
         "she read a book he cooked rice they walked home under the warm evening sun").split()


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["LMFORGE_CACHE"] = str(tmp_path_factory.mktemp("lmforge-cache"))


def write_corpus(path: Path, n_docs: int, seed: int = 0, words_per_doc: tuple[int, int] = (8, 30)) -> Path:
    """A small deterministic text corpus, one document per line."""
    import random

    rng = random.Random(seed)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(*words_per_doc))) + "." for _ in range(n_docs)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


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
