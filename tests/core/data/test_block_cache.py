"""The packed-block cache: a second TextData build reads the same blocks and tokenizer without ``datasets``, a
change to anything the blocks depend on makes a new entry, and runs with data-stage plugins are not cached."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
from tiny import TINY_GPT2, text_data, write_corpus

from lmforge.core.data.token_arrays import IDS, pack_column
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining
from lmforge.core.module import LanguageModel
from lmforge.plugins.augmenters.char_noise import CharNoise
from lmforge.plugins.objectives.causal_lm import CausalLM

TESTS = Path(__file__).parents[2]


@pytest.fixture
def corpus(tmp_path: Path) -> dict[str, Path]:
    return {"train": write_corpus(tmp_path / "train.txt", 120, seed=1), "val": write_corpus(tmp_path / "val.txt", 20, seed=2)}


def built(corpus: dict[str, Path], cache: Path, **overrides) -> dict[str, object]:
    data = text_data(corpus, cache, **overrides)
    data.prepare_data()
    return {"blocks": {s: d.blocks.numpy().copy() for s, d in data.datasets.items()},
            "vocab": data.tokenizer.backend_tokenizer.to_str()}


def entries(cache: Path) -> list[Path]:
    """The block cache's entries (not its aliases)."""
    return sorted(p for p in (cache / "blocks").iterdir() if p.is_dir()) if (cache / "blocks").is_dir() else []


def test_pack_column_written_to_a_file_is_the_in_memory_blocks(tmp_path: Path) -> None:
    rows = [[i] * (i % 7) for i in range(200)]
    column = pa.chunked_array([pa.array(rows[:50], type=IDS), pa.array(rows[50:], type=IDS)])
    in_memory, lengths, total = pack_column(column, 8)
    on_disk, disk_lengths, disk_total = pack_column(column, 8, out=tmp_path / "b.npy")
    assert isinstance(on_disk, np.memmap) and on_disk.dtype == np.int32
    assert np.array_equal(on_disk, in_memory) and np.array_equal(lengths, disk_lengths) and total == disk_total
    assert np.array_equal(np.load(tmp_path / "b.npy"), in_memory)


def test_a_second_build_reads_the_first_builds_blocks_and_tokenizer(corpus, tmp_path: Path) -> None:
    first = built(corpus, tmp_path / "cache")
    [entry] = entries(tmp_path / "cache")
    assert {p.name for p in entry.iterdir()} == {"info.json", "tokenizer", "train.npy", "val.npy"}
    for split in ("train", "val"):  # the blocks trained on are the ones on disk
        assert np.array_equal(np.load(entry / f"{split}.npy"), first["blocks"][split])
    second = built(corpus, tmp_path / "cache")
    assert second["vocab"] == first["vocab"]
    assert all(np.array_equal(first["blocks"][s], second["blocks"][s]) for s in ("train", "val"))
    # Given the tokenizer the first build trained (as a resumed run is, from its checkpoint): the same entry.
    given = TokenizerSpec(path=str(entry / "tokenizer"))
    resumed = built(corpus, tmp_path / "cache", tokenizer=given)
    assert entries(tmp_path / "cache") == [entry]
    # And a build from scratch in another cache, with that tokenizer, makes the same blocks.
    fresh = built(corpus, tmp_path / "other", tokenizer=given)
    assert all(np.array_equal(first["blocks"][s], b["blocks"][s]) for b in (resumed, fresh) for s in ("train", "val"))


def test_a_warm_build_does_not_import_datasets(corpus, tmp_path: Path) -> None:
    script = ("import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; from tiny import text_data; "
              "c = {'train': Path(sys.argv[2]), 'val': Path(sys.argv[3])}; d = text_data(c, Path(sys.argv[4])); "
              "d.prepare_data(); print(len(d.datasets['train']), 'datasets' in sys.modules)")
    args = [sys.executable, "-c", script, str(TESTS), str(corpus["train"]), str(corpus["val"]), str(tmp_path / "c")]
    cold = subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()
    warm = subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()
    assert cold[1] == "True" and warm == [cold[0], "False"]


@pytest.mark.parametrize("change", ["edit a byte", "block_size", "held-out validation", "vocab_size"])
def test_what_the_blocks_depend_on_keys_the_entry(change: str, corpus, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    base = built(corpus, cache)
    overrides: dict[str, object] = {}
    if change == "edit a byte":
        corpus["train"].write_text(corpus["train"].read_text().replace("cat", "cap", 1))
    elif change == "block_size":
        overrides["block_size"] = 16
    elif change == "held-out validation":
        overrides["val"] = None
    else:
        overrides["tokenizer"] = TokenizerSpec(train=TokenizerTraining(vocab_size=280))
    other = built(corpus, cache, **overrides)
    assert len(entries(cache)) == 2
    assert any(not np.array_equal(base["blocks"][s], other["blocks"][s]) for s in ("train", "val"))


def test_a_run_with_data_stage_plugins_is_not_cached(corpus, tmp_path: Path) -> None:
    data = text_data(corpus, tmp_path / "cache")
    model = LanguageModel(TINY_GPT2, CausalLM(), augmenters=[CharNoise(p=0.1)])
    data.trainer = SimpleNamespace(lightning_module=model, global_rank=0, world_size=1, is_global_zero=True,
                                   logger=None, progress_bar_callback=None)
    data.setup("fit")
    assert len(data.datasets["train"]) > 0 and entries(tmp_path / "cache") == []
