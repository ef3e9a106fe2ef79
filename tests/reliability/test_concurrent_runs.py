"""Runs started together never share a version, and caches filled together never hold a partial entry.

Two real ``lmforge fit`` processes of the same recipe, started at once in one directory with one empty cache,
must end in two versions with whole files each. Version claims are ``mkdir`` calls that fail for the loser,
raced here by many processes. A named version that holds a run is refused, not overwritten. Damaged cache
entries (a truncated cached ``tokenizer.json``, a truncated Arrow file, a damaged row scan, a damaged entry of
the block cache) are rebuilt, with a warning that names them.
"""

from __future__ import annotations

import csv
import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from reliability_kit import digests, lmforge, tiny_project
from tiny import write_corpus

from lmforge.core.checkpoint import file_digest, recorded_digests
from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining
from lmforge.runtime import run_versions

LMFORGE = str(Path(sys.executable).parent / "lmforge")


def test_two_fits_started_together_take_two_versions_and_keep_their_files(tmp_path: Path) -> None:
    tiny_project(tmp_path)
    env = {**os.environ, "LMFORGE_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    runs = [subprocess.Popen([LMFORGE, "fit", "--config", "tiny.yaml"], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [run.communicate(timeout=600)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [e[-2000:] for e in errors]
    root = tmp_path / "runs" / "tiny"
    assert sorted(p.name for p in root.iterdir()) == ["version_0", "version_1"]
    for version in ("version_0", "version_1"):
        run = root / version
        with open(run / "metrics.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        steps = [int(r["step"]) for r in rows if r.get("loss/total")]
        assert steps == sorted(steps) and len(steps) == len(set(steps)) == 4  # one run's rows, none interleaved
        checkpoints = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))
        assert checkpoints == ["epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt", "last.ckpt"]
        for path in (run / "checkpoints").glob("*.ckpt"):
            assert recorded_digests(path) == [file_digest(path)]
            assert torch.load(path, map_location="cpu", weights_only=True)["global_step"] in (2, 4)
        assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["logger"]["init_args"]["version"] in (0, 1)
        assert (run / "tokenizer" / "tokenizer.json").is_file()
    assert not list((tmp_path / "cache").rglob("*.partial"))  # both filled the caches: no half-written entry


def _claim(root: str, queue: multiprocessing.Queue) -> None:
    queue.put(run_versions.claim(Path(root)))


def test_many_processes_claiming_at_once_get_distinct_versions(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_claim, args=(str(tmp_path / "runs" / "x"), queue)) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    claimed = sorted(queue.get(timeout=10) for _ in workers)
    assert claimed == list(range(8))
    assert sorted(p.name for p in (tmp_path / "runs" / "x").iterdir()) == [f"version_{i}" for i in range(8)]


def test_loggers_sharing_a_directory_share_one_claim_and_a_ddp_child_inherits_it(tmp_path: Path,
                                                                                monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "r" / "version_0").mkdir(parents=True)  # an earlier run
    config = {"trainer": {"logger": [
        {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs", "name": "r"}},
        {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
         "init_args": {"save_dir": "runs", "name": "r", "version": None}},
    ]}}
    monkeypatch.delenv(run_versions.ENV, raising=False)
    run_versions.claim_versions(config, "fit")
    versions = [spec["init_args"]["version"] for spec in config["trainer"]["logger"]]
    assert versions == [1, 1] and (tmp_path / "runs" / "r" / "version_1").is_dir()
    # A process this one starts (a DDP rank) takes the same version instead of claiming another.
    child = subprocess.run(
        [sys.executable, "-c", "import json, sys; from lmforge.runtime import run_versions as v; "
                               "c = {'trainer': {'logger': {'class_path': 'CSVLogger', 'init_args': "
                               "{'save_dir': 'runs', 'name': 'r'}}}}; v.claim_versions(c, 'fit'); "
                               "print(c['trainer']['logger']['init_args']['version'])"],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "LOCAL_RANK": "1"})
    assert child.stdout.strip() == "1", child.stderr
    assert sorted(p.name for p in (tmp_path / "runs" / "r").iterdir()) == ["version_0", "version_1"]


def test_a_named_version_that_holds_a_run_is_refused_not_overwritten(tiny_run, project: Path, capsys) -> None:
    import shutil

    shutil.copytree(tiny_run.fit, project / "runs" / "tiny" / "version_0")
    run = project / "runs" / "tiny" / "version_0"
    before = digests(run)
    last = run / "checkpoints" / "last.ckpt"
    assert lmforge("fit", "--config", "tiny.yaml", "--ckpt_path", str(last), "--trainer.max_steps", "6",
                   "--trainer.logger.init_args.version=0") == 2
    err = capsys.readouterr().err
    assert "trainer.logger.init_args.version=0: runs/tiny/version_0 already holds a run" in err
    assert "metrics.csv" in err and "Leave the version unset" in err
    assert digests(run) == before  # its metrics and checkpoints, every byte
    assert sorted(p.name for p in (project / "runs" / "tiny").iterdir()) == ["version_0"]


def test_a_failed_run_gives_its_claim_back(project: Path, capsys) -> None:
    assert lmforge("fit", "--config", "tiny.yaml", "--data.init_args.val_fraction", "2.0") == 2
    assert "val_fraction" in capsys.readouterr().err
    assert not (project / "runs").exists()


# -- caches ------------------------------------------------------------------------------------


def text_data(tmp_path: Path) -> TextData:
    return TextData(train=str(tmp_path / "train.txt"), val=str(tmp_path / "val.txt"), block_size=16, batch_size=2,
                    seed=0, tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=300)),
                    cache_dir=str(tmp_path / "cache"))


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Path, list[int]]:
    write_corpus(tmp_path / "train.txt", 200, seed=1)
    write_corpus(tmp_path / "val.txt", 30, seed=2)
    data = text_data(tmp_path)
    data.prepare_data()
    return tmp_path, data.datasets["val"].blocks.flatten().tolist()


def rebuilt(tmp_path: Path, caplog, keep_blocks: bool = False) -> tuple[list[int], list[str]]:
    """The validation tokens and the warnings of a second build. Unless ``keep_blocks``, the block cache (which
    sits in front of the tokenizer and Arrow caches) is removed first, so that the caches below it are read."""
    if not keep_blocks:
        shutil.rmtree(tmp_path / "cache" / "blocks")
    with caplog.at_level(logging.WARNING):
        data = text_data(tmp_path)
        data.prepare_data()
    return data.datasets["val"].blocks.flatten().tolist(), [r.getMessage() for r in caplog.records]


def test_a_truncated_cached_tokenizer_is_rebuilt_and_named(filled, caplog) -> None:
    tmp_path, tokens = filled
    [cached] = (tmp_path / "cache" / "tokenizers").glob("*/tokenizer.json")
    cached.write_text(cached.read_text()[:100])  # what a run killed while saving it used to leave
    again, messages = rebuilt(tmp_path, caplog)
    assert again == tokens
    assert any(f"The cached tokenizer {cached.parent} is damaged" in m and "training it again" in m
               for m in messages), messages
    assert cached.read_text().rstrip().endswith("}")  # whole again


@pytest.mark.parametrize("which", ["dataset", "tokenized"])
def test_a_truncated_arrow_cache_file_is_rebuilt_and_named(which: str, filled, caplog) -> None:
    tmp_path, tokens = filled
    arrows = sorted((tmp_path / "cache" / "datasets").rglob("*.arrow"), key=lambda p: p.stat().st_mtime)
    name = "text-train.arrow" if which == "dataset" else "cache-"
    target = next(p for p in reversed(arrows) if p.name.startswith(name))
    os.truncate(target, 100)
    again, messages = rebuilt(tmp_path, caplog)
    assert again == tokens
    assert any("is damaged" in m and ("dataset cache" in m or str(target) in m) for m in messages), messages


def test_a_damaged_row_scan_is_scanned_again(filled, caplog) -> None:
    tmp_path, tokens = filled
    for entry in (tmp_path / "cache" / "datasets" / "checked").glob("*.json"):
        entry.write_text('{"rows": 3, "bad"')
    again, messages = rebuilt(tmp_path, caplog)
    assert again == tokens and any("The cached scan" in m and "is damaged" in m for m in messages)


@pytest.mark.parametrize("damage", ["truncated blocks", "truncated info", "missing tokenizer"])
def test_a_damaged_block_cache_entry_is_rebuilt_and_named(damage: str, filled, caplog) -> None:
    tmp_path, tokens = filled
    [entry] = [p for p in (tmp_path / "cache" / "blocks").iterdir() if p.is_dir()]
    if damage == "truncated blocks":
        os.truncate(entry / "val.npy", 200)
    elif damage == "truncated info":
        (entry / "info.json").write_text('{"format": 1, "spl')
    else:
        shutil.rmtree(entry / "tokenizer")
    again, messages = rebuilt(tmp_path, caplog, keep_blocks=True)
    assert again == tokens
    assert any(f"The cached blocks {entry} are damaged" in m for m in messages), messages
    assert (entry / "info.json").is_file() and (entry / "tokenizer" / "tokenizer.json").is_file()  # whole again


def test_concurrent_tokenizer_training_leaves_one_whole_entry(tmp_path: Path) -> None:
    write_corpus(tmp_path / "train.txt", 200, seed=1)
    write_corpus(tmp_path / "val.txt", 30, seed=2)
    script = ("import sys; sys.path[:0] = [sys.argv[2], sys.argv[3]]; from pathlib import Path; "
              "from test_concurrent_runs import text_data; d = text_data(Path(sys.argv[1])); d.prepare_data(); "
              "print(d.tokenizer.backend_tokenizer.to_str()[:64])")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(Path(__file__).parent),
                               str(Path(__file__).parent.parent)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"}) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    entries = list((tmp_path / "cache" / "tokenizers").iterdir())
    assert [e.name for e in entries if e.name.startswith(".")] == []  # no temporary directory left
    assert len({o[0] for o in outs}) == 1 and len(entries) == 1
