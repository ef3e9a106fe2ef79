"""Commands that would overwrite what the user has, or report a success that did not happen, refuse instead.

- ``predict --output`` naming the input (by path, symlink or hard link) is refused; the input is unchanged.
- ``predict --batch-size`` below 1 is refused rather than writing nothing; a txt input's rows keep their line
  numbers, so predictions can be matched back past blank lines; a failed predict leaves the old output.
- ``export`` to an existing file or a non-empty directory is refused unless ``--force``; success is reported
  only when the model's files are there.
- ``validate``/``test`` without ``--ckpt_path`` say that they score an untrained model.
- ``on_nonfinite_loss: skip`` with every batch non-finite fails at the end instead of exiting 0, a NaN
  validation loss stops the run before a "best" checkpoint is chosen by it, and skipped steps log NaN, not the
  last finite ``loss/total``.

(A named logger version that holds a run: tests/reliability/test_concurrent_runs.py.)
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from reliability_kit import digests, lmforge
from tiny import write_corpus

from lmforge.core.backbone import Backbone
from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining
from lmforge.core.module import LanguageModel, NonFiniteLossError
from lmforge.plugins.objectives.causal_lm import CausalLM
from lmforge.runtime.checkpoint_io import AtomicCheckpointIO


@pytest.fixture(scope="module")
def classifier(tiny_run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small sequence classifier directory (HF format), with the tiny run's tokenizer."""
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

    directory = tmp_path_factory.mktemp("classifier")
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_run.fit / "tokenizer"))
    config = GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=64, vocab_size=len(tokenizer), num_labels=2,
                        pad_token_id=tokenizer.pad_token_id, id2label={0: "neg", 1: "pos"},
                        label2id={"neg": 0, "pos": 1})
    torch.manual_seed(0)
    GPT2ForSequenceClassification(config).save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory


@pytest.mark.parametrize("how", ["same path", "symlink", "hard link", "spelled differently"])
def test_predict_refuses_to_write_over_its_input(how: str, classifier: Path, project: Path, capsys) -> None:
    source = project / "texts.txt"
    source.write_text("a good day\n\na bad day\n")
    output = {"same path": source, "symlink": project / "link.txt", "hard link": project / "hard.txt",
              "spelled differently": project / "sub" / ".." / "texts.txt"}[how]
    if how == "symlink":
        output.symlink_to(source)
    elif how == "hard link":
        os.link(source, output)
    (project / "sub").mkdir()
    before = digests(source)
    assert lmforge("predict", str(classifier), "--input", str(source), "--output", str(output)) == 1
    assert "is the input file" in capsys.readouterr().err
    assert digests(source) == before


@pytest.mark.parametrize("size", ["-1", "0"])
def test_predict_refuses_a_batch_size_below_one(size: str, classifier: Path, project: Path, capsys) -> None:
    (project / "texts.txt").write_text("one\ntwo\n")
    assert lmforge("predict", str(classifier), "--input", "texts.txt", "--output", "out.jsonl",
                   "--batch-size", size) == 1
    assert f"--batch-size must be at least 1, got {size}" in capsys.readouterr().err
    assert not (project / "out.jsonl").exists()


def test_predict_on_a_txt_keeps_each_rows_line_number(classifier: Path, project: Path, capsys) -> None:
    lines = ["\ufefffirst text", "", "second text", "   ", "", "third text"]
    (project / "texts.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert lmforge("predict", str(classifier), "--input", "texts.txt", "--output", "out.jsonl") == 0
    assert "wrote 3 predictions to out.jsonl" in capsys.readouterr().out
    rows = [json.loads(line) for line in (project / "out.jsonl").read_text().splitlines()]
    assert [(r["line"], r["text"]) for r in rows] == [(1, "first text"), (3, "second text"), (6, "third text")]
    assert all(r["prediction"] in ("neg", "pos") for r in rows)


def test_a_failed_predict_leaves_the_earlier_output(classifier: Path, project: Path, capsys) -> None:
    (project / "texts.jsonl").write_text('{"body": "one"}\n{"body": "two"}\n')
    (project / "out.jsonl").write_text('{"earlier": true}\n')
    before = digests(project / "out.jsonl")
    assert lmforge("predict", str(classifier), "--input", "texts.jsonl", "--output", "out.jsonl") == 1
    assert "no column 'text'" in capsys.readouterr().err
    assert digests(project / "out.jsonl") == before
    assert not list(project.glob(".out.jsonl.*"))


def test_export_refuses_an_existing_file_or_a_non_empty_directory(tiny_run, project: Path, capsys) -> None:
    last = str(tiny_run.fit / "checkpoints" / "last.ckpt")
    (project / "model.bin").write_text("mine")
    assert lmforge("export", last, "model.bin") == 1
    assert "model.bin is a file" in capsys.readouterr().err
    assert (project / "model.bin").read_text() == "mine"

    mine = project / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "config"}')
    (mine / "notes.txt").write_text("keep me")
    before = digests(mine)
    assert lmforge("export", last, "mine") == 1
    err = capsys.readouterr()
    assert "mine is not empty (config.json, notes.txt)" in err.err and "--force" in err.err
    assert "exported" not in err.out and digests(mine) == before

    assert lmforge("export", last, "mine", "--force") == 0
    assert "exported" in capsys.readouterr().out
    from transformers import AutoModelForCausalLM

    assert (mine / "notes.txt").read_text() == "keep me"  # only the export's own files are replaced
    assert json.loads((mine / "config.json").read_text())["model_type"] == "gpt2"
    AutoModelForCausalLM.from_pretrained(str(mine))
    assert not [p for p in project.iterdir() if p.name.startswith(".mine.")]


@pytest.mark.parametrize("command", ["validate", "test"])
def test_validate_and_test_without_a_checkpoint_say_the_model_is_untrained(command: str, project: Path,
                                                                          caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="lmforge.cli.run_guards"):
        assert lmforge(command, "--config", "tiny.yaml", "--trainer.limit_val_batches", "1",
                       "--trainer.limit_test_batches", "1") == 0
    [warning] = [r.getMessage() for r in caplog.records if "untrained" in r.getMessage()]
    assert warning.startswith(f"{command} without --ckpt_path scores an untrained model")


# -- a run that learned nothing does not end as a success -------------------------------------------

GPT2 = {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64}
#: A negative layer-norm epsilon makes every output NaN: the forward is broken on every batch, train and val.
BROKEN = Backbone(architecture="gpt2", config={**GPT2, "layer_norm_epsilon": -1.0})


def make_data(root: Path) -> TextData:
    write_corpus(root / "train.txt", 150, seed=1)
    return TextData(train=str(root / "train.txt"), val=str(root / "train.txt"), block_size=32, batch_size=4,
                    tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=300)), cache_dir=str(root / "cache"),
                    seed=0)


def test_skipping_every_batch_fails_at_the_end_and_logs_the_skips(tmp_path: Path) -> None:
    model = LanguageModel(BROKEN, CausalLM(), on_nonfinite_loss="skip", max_nonfinite_skips=100)
    trainer = Trainer(max_steps=3, accelerator="cpu", logger=CSVLogger(tmp_path, name="r"), limit_val_batches=0,
                      num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False,
                      log_every_n_steps=1, plugins=[AtomicCheckpointIO()], enable_checkpointing=False)
    with pytest.raises(NonFiniteLossError, match=r"every batch of this run \(3\) had a non-finite loss"):
        trainer.fit(model, datamodule=make_data(tmp_path))
    rows = (tmp_path / "r" / "version_0" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    totals = [row.split(",")[header.index("loss/total")] for row in rows[1:]]
    skipped = [row.split(",")[header.index("train/skipped_batches")] for row in rows[1:]]
    assert totals == ["nan"] * 3 and skipped == ["1.0", "2.0", "3.0"]  # no stale finite loss/total


def test_a_nan_validation_loss_stops_before_a_best_checkpoint_is_chosen(tmp_path: Path) -> None:
    model = LanguageModel(BROKEN, CausalLM(), on_nonfinite_loss="skip", max_nonfinite_skips=100)
    best = ModelCheckpoint(dirpath=tmp_path / "checkpoints", monitor="val/loss", mode="min", save_top_k=1)
    trainer = Trainer(max_steps=6, accelerator="cpu", logger=False, callbacks=[best], val_check_interval=2,
                      limit_val_batches=2, num_sanity_val_steps=0, enable_progress_bar=False,
                      enable_model_summary=False, plugins=[AtomicCheckpointIO()])
    with pytest.raises(NonFiniteLossError, match=r"step 2: the val loss is nan on every batch"):
        trainer.fit(model, datamodule=make_data(tmp_path))
    assert not (tmp_path / "checkpoints").exists() or not list((tmp_path / "checkpoints").iterdir())


def test_validating_a_broken_model_warns_instead_of_stopping(tmp_path: Path, caplog) -> None:
    model = LanguageModel(BROKEN, CausalLM())
    trainer = Trainer(accelerator="cpu", logger=False, limit_val_batches=2, enable_progress_bar=False,
                      enable_model_summary=False)
    with caplog.at_level(logging.WARNING, logger="lmforge.core.module"):
        [result] = trainer.validate(model, datamodule=make_data(tmp_path))
    assert result["val/loss"] != result["val/loss"]  # NaN, reported as it is
    assert any("the scores below mean nothing" in r.getMessage() for r in caplog.records)
