"""A damaged checkpoint is named as corrupt on every load path, and nothing is built or written from it.

Three damages of a real checkpoint of the tiny run: 2,000 bytes flipped in the middle, the file cut to a
third, and a file of random bytes. Each is refused by resuming (``fit --ckpt_path``), ``validate``,
``export``, ``predict``, a teacher, ``init_from`` and ``backbone.checkpoint``, the tokenizer restore and the
Lightning load itself, with a message that names the file and says it is corrupt or not a readable
checkpoint: never "could run code", never a raw ``PytorchStreamReader`` error. A checkpoint without a digest
(written before digests existed) still loads, with a note; without one, a flip is still caught by the zip
archive's own CRC-32 checks.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path

import pytest
from reliability_kit import digests, lmforge

from lmforge.core.backbone import Backbone, check_start_checkpoint, position_limit
from lmforge.core.checkpoint import (
    DIGEST_SUFFIX,
    CheckpointError,
    CorruptCheckpointError,
    load_checkpoint,
    load_trained,
    trained_config,
)
from lmforge.core.data.text import TextData
from lmforge.runtime.checkpoint_io import AtomicCheckpointIO


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 2000] = bytes(b ^ 0xFF for b in data[middle:middle + 2000])
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 3)


def random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(0).randbytes(path.stat().st_size))


DAMAGES = {"flipped": flip, "truncated": truncate, "random": random_bytes}


def damaged(source: Path, directory: Path, damage: str, keep_digest: bool = True) -> Path:
    """A copy of ``source`` (with its digest file, renamed along) in ``directory``, damaged."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{damage}.ckpt"
    shutil.copyfile(source, target)
    if keep_digest:
        text = Path(str(source) + DIGEST_SUFFIX).read_text().replace(source.name, target.name)
        Path(str(target) + DIGEST_SUFFIX).write_text(text)
    DAMAGES[damage](target)
    return target


def assert_named_as_corrupt(message: str, path: Path) -> None:
    assert str(path) in message, message
    assert "is corrupt" in message or "is not a readable checkpoint" in message, message
    assert "could run code" not in message and "PytorchStreamReader" not in message, message
    assert "Traceback" not in message, message


@pytest.fixture
def last(tiny_run) -> Path:
    return tiny_run.fit / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("damage", sorted(DAMAGES))
@pytest.mark.parametrize("command", ["validate", "test"])
def test_validate_and_test_refuse_a_damaged_checkpoint(command: str, damage: str, last: Path, project: Path,
                                                       capsys) -> None:
    bad = damaged(last, project / "ckpts", damage)
    before = digests(project / "ckpts", last)
    assert lmforge(command, "--config", "tiny.yaml", "--ckpt_path", str(bad)) == 2
    err = capsys.readouterr().err
    assert f"lmforge: error: --ckpt_path {bad}" in err
    assert_named_as_corrupt(err, bad)
    assert digests(project / "ckpts", last) == before and not (project / "runs").exists()


def test_resuming_refuses_a_damaged_checkpoint(last: Path, project: Path, capsys) -> None:
    bad = damaged(last, project / "ckpts", "truncated")
    assert lmforge("fit", "--config", "tiny.yaml", "--ckpt_path", str(bad)) == 2
    assert_named_as_corrupt(capsys.readouterr().err, bad)
    assert not (project / "runs").exists()


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_export_refuses_a_damaged_checkpoint_and_writes_nothing(damage: str, last: Path, project: Path,
                                                                capsys) -> None:
    bad = damaged(last, project / "ckpts", damage)
    assert lmforge("export", str(bad), str(project / "hf")) == 1
    assert_named_as_corrupt(capsys.readouterr().err, bad)
    assert not (project / "hf").exists() and not list(project.glob(".hf.*"))


def test_predict_refuses_a_damaged_checkpoint_and_writes_nothing(last: Path, project: Path, capsys) -> None:
    bad = damaged(last, project / "ckpts", "flipped")
    (project / "in.txt").write_text("some text\n")
    assert lmforge("predict", str(bad), "--input", "in.txt", "--output", "out.jsonl") == 1
    assert_named_as_corrupt(capsys.readouterr().err, bad)
    assert not (project / "out.jsonl").exists()


LOADERS = {
    "teacher": lambda p: load_trained(p, "AutoModelForCausalLM", "model.distiller.init_args.teacher"),
    "init_from": lambda p: trained_config(p, "model.backbone.init_from"),
    "backbone.checkpoint": lambda p: position_limit(Backbone(checkpoint=str(p))),
    "backbone.checkpoint task": lambda p: check_start_checkpoint(Backbone(checkpoint=str(p)), "AutoModelForCausalLM"),
    "Lightning's load (resume, validate, test)": lambda p: AtomicCheckpointIO().load_checkpoint(p),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_every_loader_names_the_damage(loader: str, damage: str, last: Path, tmp_path: Path) -> None:
    bad = damaged(last, tmp_path, damage)
    with pytest.raises(CorruptCheckpointError) as excinfo:
        LOADERS[loader](bad)
    assert_named_as_corrupt(str(excinfo.value), bad)
    if loader in ("teacher", "init_from"):  # the recipe key that named the file comes first
        assert str(excinfo.value).startswith("model.")


def test_the_tokenizer_restore_names_the_damage(last: Path, project: Path) -> None:
    bad = damaged(last, project / "ckpts", "flipped")
    data = TextData(train=str(project / "train.txt"), val=str(project / "val.txt"), cache_dir=str(project / "c"))
    data.checkpoint_path = str(bad)
    with pytest.raises(CheckpointError) as excinfo:
        data.prepare_data()
    assert_named_as_corrupt(str(excinfo.value), bad)


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_without_a_digest_the_damage_is_still_named(damage: str, last: Path, tmp_path: Path) -> None:
    """Checkpoints written before digests: the zip's CRC-32 checks catch a flip, its directory a truncation."""
    bad = damaged(last, tmp_path, damage, keep_digest=False)
    with pytest.raises(CorruptCheckpointError) as excinfo:
        load_checkpoint(bad)
    assert_named_as_corrupt(str(excinfo.value), bad)


def test_a_checkpoint_without_a_digest_still_loads_with_a_note(last: Path, tmp_path: Path, caplog) -> None:
    old = tmp_path / "old.ckpt"
    shutil.copyfile(last, old)  # no .sha256 beside it
    with caplog.at_level(logging.WARNING, logger="lmforge.core.checkpoint"):
        checkpoint = load_checkpoint(old)
    assert checkpoint["global_step"] == 4
    [note] = [r.getMessage() for r in caplog.records if "no digest file" in r.getMessage()]
    assert str(old) in note
    assert AtomicCheckpointIO().load_checkpoint(old)["global_step"] == 4


def test_a_sound_checkpoint_matches_its_digest_and_sha256sum_agrees(last: Path) -> None:
    import hashlib
    import subprocess

    recorded = Path(str(last) + DIGEST_SUFFIX).read_text()
    assert recorded == f"{hashlib.sha256(last.read_bytes()).hexdigest()}  last.ckpt\n"
    if shutil.which("sha256sum"):
        done = subprocess.run(["sha256sum", "-c", last.name + DIGEST_SUFFIX], cwd=last.parent, capture_output=True,
                              text=True)
        assert done.returncode == 0 and "last.ckpt: OK" in done.stdout
