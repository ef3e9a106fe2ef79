"""``data.test``: the split ``lmforge test`` scores (TextData and LabeledTextData), read only when testing;
without it ``test`` gets the validation split."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from lightning.pytorch import Trainer
from lightning.pytorch.trainer.states import TrainerFn

from lmforge.core.data.files import DataFileError
from lmforge.core.data.labeled import LabeledTextData
from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining

WORDS = "the cat sat on a mat and the dog ran to the park while birds sang in tall green trees".split()


def write_docs(path: Path, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    docs = [f"note {seed}-{i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) for i in range(n)]
    path.write_text("\n".join(docs) + "\n")
    return docs


def text_data(tmp_path: Path, test: Path | None) -> TextData:
    write_docs(tmp_path / "train.txt", 80, seed=1)
    write_docs(tmp_path / "val.txt", 20, seed=2)
    return TextData(train=str(tmp_path / "train.txt"), val=str(tmp_path / "val.txt"),
                    test=str(test) if test else None, block_size=8, batch_size=4, cache_dir=str(tmp_path / "cache"),
                    tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=300)))


def test_test_split_is_the_given_files_packed(tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "test.txt", 20, seed=3)
    data = text_data(tmp_path, tmp_path / "test.txt")
    data.setup("test")
    tok = data.tokenizer
    expected = [i for doc in docs for i in [*tok(doc)["input_ids"], tok.eos_token_id]]  # packing, by hand
    got = [i for batch in data.test_dataloader() for i in batch["input_ids"].flatten().tolist()]
    assert got == expected[: len(got)] and len(expected) - len(got) < 8
    assert data.data_files()["data.test"] == [tmp_path / "test.txt"]


def test_without_a_test_split_test_scores_the_validation_split(tmp_path: Path) -> None:
    data = text_data(tmp_path, None)
    data.setup("test")
    assert "test" not in data.datasets and not data.reads_test_split()
    assert data.test_dataloader().dataset is data.datasets["val"]


def test_the_test_split_is_read_only_when_testing(tmp_path: Path) -> None:
    write_docs(tmp_path / "test.txt", 20, seed=3)
    data = text_data(tmp_path, tmp_path / "test.txt")
    trainer = Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.state.fn = TrainerFn.FITTING
    data.trainer = trainer
    assert not data.reads_test_split()
    trainer.state.fn = TrainerFn.TESTING
    assert data.reads_test_split()


def test_a_missing_test_file_is_named_with_its_key(tmp_path: Path) -> None:
    data = text_data(tmp_path, tmp_path / "nowhere.txt")
    with pytest.raises(DataFileError, match="data.test: file not found"):
        data.check_files()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def reviews(n: int, labels: tuple[str, ...] = ("good", "bad")) -> list[dict]:
    return [{"text": f"review {i} says it was {labels[i % len(labels)]}", "label": labels[i % len(labels)]}
            for i in range(n)]


def labeled(tmp_path: Path, test_rows: list[dict]) -> LabeledTextData:
    return LabeledTextData(train=str(write_jsonl(tmp_path / "train.jsonl", reviews(30))),
                           val=str(write_jsonl(tmp_path / "val.jsonl", reviews(6))),
                           test=str(write_jsonl(tmp_path / "test.jsonl", test_rows)), max_length=16, batch_size=4,
                           tokenizer=TokenizerSpec(train=TokenizerTraining(algorithm="wordpiece", vocab_size=100)),
                           cache_dir=str(tmp_path / "cache"))


def test_labeled_test_split_uses_the_training_label_ids(tmp_path: Path) -> None:
    rows = [{"text": "review zero says it was bad", "label": "bad"}] * 3 + [{"text": "it was good", "label": "good"}]
    data = labeled(tmp_path, rows)
    data.setup("test")
    assert data.labels.names == ["bad", "good"] and data.labels.counts["test"] == {"bad": 3, "good": 1}
    labels = [int(i) for batch in data.test_dataloader() for i in batch["labels"]]
    assert labels == [0, 0, 0, 1]


def test_a_test_label_unseen_in_training_names_data_test(tmp_path: Path) -> None:
    data = labeled(tmp_path, [{"text": "so so", "label": "meh"}])
    with pytest.raises(ValueError, match="data.test: row 1 has label 'meh'"):
        data.setup("test")
