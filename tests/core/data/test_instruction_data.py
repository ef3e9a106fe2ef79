"""InstructionData on the bundled instruction set and on small hand-made files: both shapes, both layouts,
labels on the responses only, long examples, bad rows, the chat template saved with the run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from lmforge.core.data.files import DataFileError, bundled_data_dir
from lmforge.core.data.instruction import DEFAULT_CHAT_TEMPLATE, IGNORE_INDEX
from lmforge.core.data.instruction_data import InstructionData
from lmforge.core.data.instruction_layout import model_inputs
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining

BUNDLED = {"train": "lmforge:instructions/train.jsonl", "val": "lmforge:instructions/val.jsonl"}


def instruction_data(tmp_path: Path, **kwargs) -> InstructionData:
    settings = dict(tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=400)), max_length=96, batch_size=8,
                    cache_dir=str(tmp_path / "cache"), seed=0)
    data = InstructionData(**{**settings, **kwargs})
    data.setup("fit")
    return data


def bundled_rows(split: str) -> list[dict]:
    path = bundled_data_dir() / "instructions" / f"{split}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def pairs(n: int, offset: int = 0) -> list[dict]:
    return [{"question": f"What is {i} plus 1?", "answer": str(i + 1)} for i in range(offset, offset + n)]


@pytest.fixture(scope="module")
def padded_bundled(tmp_path_factory: pytest.TempPathFactory) -> InstructionData:
    return instruction_data(tmp_path_factory.mktemp("padded"), **BUNDLED, layout="padded")


def test_padded_batches_label_exactly_each_response_and_its_eos(padded_bundled: InstructionData) -> None:
    data = padded_bundled
    tok = data.tokenizer
    val = bundled_rows("val")
    batch = next(iter(data.val_dataloader()))  # not shuffled: rows in file order
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    for b in range(batch["input_ids"].shape[0]):
        labels = batch["labels"][b]
        labeled = labels[labels != IGNORE_INDEX].tolist()
        assert labeled[-1] == tok.eos_token_id
        assert tok.decode(labeled[:-1]) == " " + val[b]["response"]  # the template puts a space before it
        # Labeled positions are the last tokens of the example (the response ends it).
        length = int(batch["attention_mask"][b].sum())
        assert (labels[length - len(labeled):length] != IGNORE_INDEX).all()
        prompt = tok.decode(batch["input_ids"][b, :length - len(labeled)])
        assert val[b]["prompt"] in prompt and prompt.endswith("### Response:")


def test_the_tokenizer_is_saved_with_the_default_chat_template(padded_bundled: InstructionData,
                                                               tmp_path: Path) -> None:
    padded_bundled.save_with_run(tmp_path)
    saved = AutoTokenizer.from_pretrained(str(tmp_path / "tokenizer"), local_files_only=True)
    assert saved.chat_template == DEFAULT_CHAT_TEMPLATE == padded_bundled.template
    assert padded_bundled.val_conversations[0][-1]["content"] == bundled_rows("val")[0]["response"]


def test_both_shapes_of_the_bundled_set_give_the_same_tokens(tmp_path: Path,
                                                             padded_bundled: InstructionData) -> None:
    other = instruction_data(tmp_path, **BUNDLED, layout="padded", shape="prompt_response")
    for split in ("train", "val"):
        a, b = padded_bundled.datasets[split].examples, other.datasets[split].examples
        assert (a.input_ids == b.input_ids).all() and (a.labels == b.labels).all()


def test_packed_batches_keep_every_example_and_train_like_padded_ones(tmp_path: Path,
                                                                      padded_bundled: InstructionData) -> None:
    packed = instruction_data(tmp_path, **BUNDLED, layout="packed", tokenizer=TokenizerSpec(train=TokenizerTraining(
        vocab_size=400)))
    data = packed.datasets["val"]
    assert sorted(i for block in data.blocks for i in block) == list(range(len(bundled_rows("val"))))
    batch = next(iter(packed.val_dataloader()))
    assert set(batch) == {"input_ids", "labels", "position_ids"}
    # The loss of a packed batch is the token-weighted mean of its examples' losses, each run alone.
    config = AutoConfig.for_model("gpt2", n_layer=1, n_embd=32, n_head=2, n_positions=96,
                                  vocab_size=len(packed.tokenizer), bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        loss = model(**model_inputs(batch), labels=batch["labels"]).loss
        total = count = 0
        for block in data.blocks[: batch["input_ids"].shape[0]]:
            for i in block:
                ids, labels = (torch.as_tensor(x, dtype=torch.long)[None] for x in data.examples.example(i))
                n = int((labels[:, 1:] != IGNORE_INDEX).sum())
                total += model(ids, labels=labels).loss * n
                count += n
    torch.testing.assert_close(loss, total / count, rtol=1e-5, atol=1e-6)


def test_the_train_loader_is_seeded_and_length_grouped(padded_bundled: InstructionData) -> None:
    first = [b["input_ids"] for _, b in zip(range(3), padded_bundled.train_dataloader())]
    again = [b["input_ids"] for _, b in zip(range(3), padded_bundled.train_dataloader())]
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    padding = sum(float((b["attention_mask"] == 0).float().mean()) for b in padded_bundled.train_dataloader())
    assert padding / len(padded_bundled.train_dataloader()) < 0.2  # mega-batches of 4 batches: ~15% (random: ~39%)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_prompt_response_columns_are_configurable_in_csv_and_parquet(tmp_path: Path, fmt: str) -> None:
    import pandas as pd

    paths = {}
    for split, rows in (("train", pairs(40)), ("val", pairs(8, offset=100))):
        frame = pd.DataFrame(rows)
        paths[split] = tmp_path / f"{split}.{fmt}"
        frame.to_csv(paths[split], index=False) if fmt == "csv" else frame.to_parquet(paths[split])
    data = instruction_data(tmp_path, train=str(paths["train"]), val=str(paths["val"]), prompt_column="question",
                            response_column="answer", layout="padded")
    tok = data.tokenizer
    ids, labels = data.datasets["val"].examples.example(0)
    assert tok.decode([t for t in labels if t != IGNORE_INDEX]) == " 101" + tok.eos_token
    assert "What is 100 plus 1?" in tok.decode(ids)


def test_a_missing_column_names_its_recipe_key(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", pairs(10))
    with pytest.raises(DataFileError, match=r"no column 'prompt' \(data.prompt_column\)"):
        instruction_data(tmp_path, train=str(train))


BAD = [{"messages": [{"role": "user", "content": "hi"}]},
       {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]}]


def good_messages(n: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}]}
            for r in pairs(n)]


def test_bad_rows_are_refused_with_their_row_numbers(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", good_messages(5) + BAD + good_messages(5))
    with pytest.raises(DataFileError, match=r"data.train: 2 of 12 row\(s\).*row 6: the conversation has no "
                                            r"assistant turn.*row 7: .*empty assistant turn.*skip_bad_rows"):
        instruction_data(tmp_path, train=str(train))


def test_bad_rows_are_skipped_loudly_when_asked(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", good_messages(30) + BAD)
    val = write_jsonl(tmp_path / "val.jsonl", good_messages(4))
    with caplog.at_level(logging.WARNING, logger="lmforge.core.data.instruction_data"):
        data = instruction_data(tmp_path, train=str(train), val=str(val), skip_bad_rows=True, layout="padded")
    assert "left out 2 of 32 row(s)" in caplog.text
    assert len(data.datasets["train"]) == 30


@pytest.fixture
def long_rows(tmp_path: Path) -> dict[str, str]:
    rows = pairs(20) + [{"question": "What is " + "very " * 80 + "long?", "answer": "yes"},
                        {"question": "Say it.", "answer": "word " * 80}]
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": r["question"], "response": r["answer"]} for r in rows])
    val = write_jsonl(tmp_path / "val.jsonl", [{"prompt": "What is 7 plus 1?", "response": "8"}])
    return {"train": str(train), "val": str(val)}


def test_long_examples_are_truncated_with_a_count(tmp_path: Path, long_rows: dict, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="lmforge.core.data.instruction_data"):
        data = instruction_data(tmp_path, **long_rows, max_length=48, long_examples="truncate", layout="padded")
    # The long prompt leaves no response token in 48 tokens and is dropped; the long response is cut.
    assert "truncated 2 of 22 examples to data.max_length=48" in caplog.text
    assert "1 of them kept no response token and were dropped" in caplog.text
    examples = data.datasets["train"].examples
    assert len(examples) == 21 and examples.lengths.max() == 48


def test_long_examples_are_dropped_with_a_count(tmp_path: Path, long_rows: dict, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="lmforge.core.data.instruction_data"):
        data = instruction_data(tmp_path, **long_rows, max_length=48, long_examples="drop")
    assert "dropped 2 of 22 examples longer than data.max_length=48" in caplog.text
    assert len(data.datasets["train"].examples) == 20


def test_long_examples_are_refused_when_asked(tmp_path: Path, long_rows: dict) -> None:
    with pytest.raises(ValueError, match=r"2 of 22 examples are longer than data.max_length=48.*data.long_examples"):
        instruction_data(tmp_path, **long_rows, max_length=48, long_examples="error")


@pytest.mark.parametrize("key, value, message", [
    ("layout", "ragged", "data.layout must be one of"),
    ("long_examples", "ignore", "data.long_examples must be one of"),
    ("max_length", 1, "data.max_length must be at least 2"),
])
def test_bad_settings_are_refused_naming_the_key(key: str, value, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        InstructionData(train="x.jsonl", **{key: value})
