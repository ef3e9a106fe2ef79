"""BaseTextData: what TextData, LabeledTextData and InstructionData share, checked once for all three (the
arguments' checks and their messages, the file lists, the held-out split, the build loop's data filters)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from tiny import TINY_GPT2, write_jsonl

from lmforge.core.data.instruction_data import InstructionData
from lmforge.core.data.labeled import LabeledTextData
from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining
from lmforge.core.module import LanguageModel
from lmforge.core.plugins import DataFilter
from lmforge.plugins.objectives.causal_lm import CausalLM

CLASSES = [TextData, LabeledTextData, InstructionData]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize(("setting", "value", "message"), [
    ("val_fraction", 0.0, "data.val_fraction must be between 0 and 1, got 0.0."),
    ("val_fraction", 1.0, "data.val_fraction must be between 0 and 1, got 1.0."),
    ("val_fraction", -0.1, "data.val_fraction must be between 0 and 1, got -0.1."),
    ("val_fraction", 1.5, "data.val_fraction must be between 0 and 1, got 1.5."),
    ("batch_size", 0, "data.batch_size must be at least 1, got 0."),
])
def test_shared_settings_are_refused_with_one_message_before_any_file_is_read(cls, setting, value, message) -> None:
    with pytest.raises(ValueError) as caught:
        cls(train="no/such/file.jsonl", **{setting: value})
    assert str(caught.value) == message


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_files_are_kept_as_lists_in_the_order_given(cls) -> None:
    one = cls(train="a.jsonl", val="b.jsonl")
    assert (one.train_files, one.val_files, one.test_files) == (["a.jsonl"], ["b.jsonl"], None)
    many = cls(train=("c.jsonl", "a.jsonl"), val=None)
    assert (many.train_files, many.val_files) == (["c.jsonl", "a.jsonl"], None)
    if cls is not InstructionData:  # InstructionData has no data.test
        assert cls(train="a.jsonl", test=["t2.jsonl", "t1.jsonl"]).test_files == ["t2.jsonl", "t1.jsonl"]


@pytest.mark.parametrize(("cls", "row", "message"), [
    (TextData, {"text": "one lonely document"},
     "data.train: 1 document(s) cannot be split into train and validation; add documents or give data.val."),
    (InstructionData, {"prompt": "What is 1 plus 1?", "response": "2"},
     "data.train: 1 row(s) cannot be split into train and validation; add rows or give data.val."),
], ids=["TextData", "InstructionData"])
def test_one_training_row_cannot_be_split_into_train_and_validation(tmp_path: Path, cls, row, message) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [row])
    data = cls(train=str(train), cache_dir=str(tmp_path / "cache"), seed=0)
    with pytest.raises(ValueError) as caught:
        data.setup("fit")
    assert str(caught.value) == message


class DropQuokkas(DataFilter):
    """Drops every conversation that mentions a quokka."""

    def process_text(self, examples, rng, split):
        keep = ["quokka" not in json.dumps(messages) for messages in examples["messages"]]
        return {k: [v for v, ok in zip(column, keep, strict=True) if ok] for k, column in examples.items()}


@pytest.mark.parametrize("filtered", [False, True], ids=["no filter", "filter"])
def test_instruction_data_trains_its_tokenizer_after_the_data_filters(tmp_path: Path, filtered: bool) -> None:
    # As TextData and LabeledTextData do: what a data filter removes never becomes vocabulary.
    plain = [{"prompt": f"What is {i} plus 1?", "response": str(i + 1)} for i in range(30)]
    quokkas = [{"prompt": "quokka " * 12, "response": "quokka quokka"} for _ in range(30)]
    train = write_jsonl(tmp_path / "train.jsonl", plain + quokkas)
    val = write_jsonl(tmp_path / "val.jsonl", plain[:5])
    data = InstructionData(train=str(train), val=str(val), max_length=64, batch_size=4, seed=0,
                           tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=400)),
                           cache_dir=str(tmp_path / "cache"))
    model = LanguageModel(TINY_GPT2, CausalLM(), data_filters=[DropQuokkas()] if filtered else [])
    data.trainer = SimpleNamespace(lightning_module=model, global_rank=0, world_size=1, is_global_zero=True,
                                   logger=None, progress_bar_callback=None)
    data.setup("fit")
    learned = any("quokka" in token for token in data.tokenizer.get_vocab())
    assert learned is not filtered
    assert len(data.datasets["train"]) == (30 if filtered else 60)
