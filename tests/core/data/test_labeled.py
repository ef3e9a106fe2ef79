"""LabeledTextData: label kinds and names, stratified splits, sub-word alignment, padding, bad input,
and the data-stage plugin hooks on labeled rows."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger
from tiny import TINY_BERT, write_jsonl
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from lmforge.core.backbone import Backbone
from lmforge.core.data.base import ResumableSampler
from lmforge.core.data.files import DataFileError
from lmforge.core.data.labeled import (
    IGNORE_INDEX,
    LabeledTextData,
    align_labels,
    label_kind,
    label_names,
    pad_batch,
    stratified_split,
)
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining
from lmforge.core.module import LanguageModel
from lmforge.core.plugins import Augmenter, BiasMitigator
from lmforge.plugins.objectives.causal_lm import CausalLM
from lmforge.plugins.objectives.sequence_classification import SequenceClassification

SENTIMENT = [("a great toaster, i loved it", "positive"), ("the film was dull and too long", "negative"),
             ("the soup was okay", "neutral"), ("wonderful service and tasty bread", "positive"),
             ("the screen broke after a week", "negative"), ("an average phone overall", "neutral")]


def sentiment_rows(n: int, offset: int = 0) -> list[dict]:
    return [{"text": f"{SENTIMENT[i % 6][0]} number {i + offset}", "label": SENTIMENT[i % 6][1]} for i in range(n)]


def labeled(tmp_path: Path, train: Path, val: Path | None = None, **kwargs) -> LabeledTextData:
    settings = dict(tokenizer=TokenizerSpec(train=TokenizerTraining(algorithm="wordpiece", vocab_size=150)),
                    max_length=32, batch_size=4, cache_dir=str(tmp_path / "cache"), seed=0)
    data = LabeledTextData(train=str(train), val=str(val) if val else None, **{**settings, **kwargs})
    data.setup("fit")
    return data


# -- pure helpers --------------------------------------------------------------------------------


@pytest.mark.parametrize("text_type, label_type, kind", [
    ("string", "string", "class"), ("string", "int", "class"), ("string", "bool", "class"),
    ("string", "float", "regression"), ("string", "list[string]", "multi"), ("string", "list[int]", "multi"),
    ("list[string]", "list[string]", "tags"),
])
def test_label_kind_follows_the_column_types(text_type: str, label_type: str, kind: str) -> None:
    assert label_kind(text_type, label_type) == kind


@pytest.mark.parametrize("text_type, label_type, message", [
    ("list[string]", "string", "a list of tags per row"),
    ("string", "list[float]", r"got list\[float\]"),
    ("string", "Json", "same type"),
    ("int", "string", "must hold strings"),
])
def test_label_kind_refuses_other_combinations(text_type: str, label_type: str, message: str) -> None:
    with pytest.raises(DataFileError, match=message):
        label_kind(text_type, label_type)


def test_label_names_are_sorted_integers_numerically_and_tags_with_o_first() -> None:
    assert label_names(["pos", "neg", "neu", "neg"], "class") == ["neg", "neu", "pos"]
    assert label_names([10, 2, 1, 2], "class") == ["1", "2", "10"]
    assert label_names([["b", "a"], [], ["c"]], "multi") == ["a", "b", "c"]
    tags = [["B-PER", "I-PER", "O"], ["B-LOC", "I-LOC", "B-DATE", "O"], ["I-PER"]]
    assert label_names(tags, "tags") == ["O", "B-DATE", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert label_names([0.5, 1.0], "regression") == []


def test_stratified_split_holds_out_each_class_share() -> None:
    keys = ["a"] * 50 + ["b"] * 30 + ["c"] * 20 + ["d"]  # "d" has one example: round(0.1) keeps it in training
    train, val = stratified_split(keys, 0.1, seed=3)
    assert Counter(keys[i] for i in val) == {"a": 5, "b": 3, "c": 2}
    assert sorted(train + val) == list(range(len(keys))) and not set(train) & set(val)
    assert stratified_split(keys, 0.1, seed=3) == (train, val)
    assert stratified_split(keys, 0.1, seed=4)[1] != val


def test_align_labels_labels_the_first_sub_token_only() -> None:
    # [CLS] maria lo ##pez visited qu ##ito . [SEP]
    word_ids = [None, 0, 1, 1, 2, 3, 3, 4, None]
    assert align_labels(word_ids, [7, 8, 0, 3, 0]) == [-100, 7, 8, -100, 0, 3, -100, 0, -100]
    assert align_labels([None, 0, 0, 0, None], [5]) == [-100, 5, -100, -100, -100]


def test_pad_batch_pads_to_the_longest_row() -> None:
    rows = [{"input_ids": [2, 5, 3], "attention_mask": [1, 1, 1], "labels": 1},
            {"input_ids": [2, 3], "attention_mask": [1, 1], "labels": 0}]
    batch = pad_batch(rows, pad_token_id=0)
    assert batch["input_ids"].tolist() == [[2, 5, 3], [2, 3, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [1, 0] and batch["labels"].dtype == torch.long
    tagged = [{"input_ids": [2, 5, 3], "labels": [-100, 4, -100]}, {"input_ids": [2, 3], "labels": [-100, -100]}]
    assert pad_batch(tagged, 0, token_labels=True)["labels"].tolist() == [[-100, 4, -100], [-100, -100, -100]]
    multi = [{"input_ids": [1], "labels": [1.0, 0.0]}, {"input_ids": [1], "labels": [0.0, 0.0]}]
    assert pad_batch(multi, 0)["labels"].dtype == torch.float32


# -- LabeledTextData ------------------------------------------------------------------------------


def fixed_wordpiece(directory: Path) -> Path:
    """A WordPiece tokenizer with a hand-written vocabulary, so the sub-word pieces are known."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "maria", "lo", "##pez", "visited", "qu", "##ito", ".",
             "in", "may"]
    tok = Tokenizer(models.WordPiece({p: i for i, p in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(str(directory))
    return directory


def test_word_tags_go_to_first_sub_tokens_through_the_data_module(tmp_path: Path) -> None:
    rows = [{"tokens": ["Maria", "Lopez", "visited", "Quito", "."], "tags": ["B-PER", "I-PER", "O", "B-LOC", "O"]},
            {"tokens": ["Quito", "in", "May"], "tags": ["B-LOC", "O", "B-DATE"]}]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    data = labeled(tmp_path, train, train, text_column="tokens", label_column="tags",
                   tokenizer=TokenizerSpec(path=str(fixed_wordpiece(tmp_path / "tok"))))
    assert data.labels.kind == "tags"
    assert data.labels.names == ["O", "B-DATE", "B-LOC", "B-PER", "I-PER"]
    O, DATE, LOC, PER, IPER = range(5)
    first, second = data.datasets["train"][0], data.datasets["train"][1]
    assert data.tokenizer.convert_ids_to_tokens(first["input_ids"]) == \
        ["[CLS]", "maria", "lo", "##pez", "visited", "qu", "##ito", ".", "[SEP]"]
    assert first["labels"] == [-100, PER, IPER, -100, O, LOC, -100, O, -100]
    assert second["labels"] == [-100, LOC, -100, O, DATE, -100]
    batch = next(iter(data.val_dataloader()))
    assert batch["labels"].shape == batch["input_ids"].shape == (2, 9)
    assert batch["labels"][1].tolist()[6:] == [IGNORE_INDEX] * 3  # padding is ignored


def test_sentiment_rows_get_label_ids_dynamic_padding_and_truncation(tmp_path: Path) -> None:
    rows = sentiment_rows(24)
    rows[5]["text"] = " ".join(["great"] * 100)
    data = labeled(tmp_path, write_jsonl(tmp_path / "train.jsonl", rows),
                   write_jsonl(tmp_path / "val.jsonl", sentiment_rows(6, offset=100)), max_length=16)
    assert data.labels.names == ["negative", "neutral", "positive"]
    assert data.labels.counts["train"] == {"negative": 8, "neutral": 8, "positive": 8}
    train = data.datasets["train"]
    assert train["labels"] == [data.labels.label2id[r["label"]] for r in rows]
    assert len(train[5]["input_ids"]) == 16 and train[5]["input_ids"][-1] == data.tokenizer.sep_token_id
    assert train[0]["input_ids"] == data.tokenizer(rows[0]["text"])["input_ids"]
    for batch in data.train_dataloader():
        lengths = batch["attention_mask"].sum(1)
        assert batch["input_ids"].shape[1] == int(lengths.max())  # padded to the batch's longest, not max_length
        assert bool((batch["input_ids"][batch["attention_mask"] == 0] == data.tokenizer.pad_token_id).all())
        assert batch["labels"].dtype == torch.long and batch["labels"].shape == (4,)


def test_without_val_a_stratified_share_is_held_out(tmp_path: Path) -> None:
    rows = [{"text": f"text {i}", "label": "rare" if i < 10 else "common"} for i in range(100)]
    data = labeled(tmp_path, write_jsonl(tmp_path / "all.jsonl", rows), val_fraction=0.2)
    assert data.labels.counts["val"] == {"common": 18, "rare": 2}
    assert data.labels.counts["train"] == {"common": 72, "rare": 8}


def test_multi_label_regression_and_text_pairs_from_csv(tmp_path: Path) -> None:
    multi = [{"text": f"text {i}", "label": [["sports"], ["politics", "sports"], []][i % 3]} for i in range(12)]
    data = labeled(tmp_path / "m", write_jsonl(tmp_path / "multi.jsonl", multi))
    assert data.labels.kind == "multi" and data.labels.names == ["politics", "sports"]
    hot = {tuple(r["labels"]) for r in data.datasets["train"]} | {tuple(r["labels"]) for r in data.datasets["val"]}
    assert hot == {(0.0, 1.0), (1.0, 1.0), (0.0, 0.0)}

    with open(tmp_path / "pairs.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["premise", "hypothesis", "score"])
        writer.writerows([[f"a cat sat {i}", "a cat", i / 10] for i in range(10)])
    data = labeled(tmp_path / "p", tmp_path / "pairs.csv", text_column="premise", text_pair_column="hypothesis",
                   label_column="score")
    assert data.labels.kind == "regression" and data.labels.num_labels == 1 and data.labels.names == []
    row = data.datasets["train"][0]
    assert isinstance(row["labels"], float)
    assert row["token_type_ids"][0] == 0 and row["token_type_ids"][-1] == 1  # [CLS] premise [SEP] hypothesis [SEP]
    assert data.tokenizer.convert_ids_to_tokens(row["input_ids"]).count("[SEP]") == 2


# -- bad input ---------------------------------------------------------------------------------------


def test_a_val_label_unseen_in_training_is_an_error_unless_data_labels_lists_it(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(12))
    val = write_jsonl(tmp_path / "val.jsonl", [{"text": "fine", "label": "positive"}, {"text": "eh", "label": "mixed"}])
    with pytest.raises(ValueError) as excinfo:
        labeled(tmp_path, train, val)
    message = str(excinfo.value)
    assert message.startswith("data.val: row 2 has label 'mixed'") and "data.labels" in message
    data = labeled(tmp_path, train, val, labels=["positive", "negative", "neutral", "mixed"])
    assert data.labels.label2id == {"positive": 0, "negative": 1, "neutral": 2, "mixed": 3}
    assert data.datasets["val"]["labels"] == [0, 3]
    with pytest.raises(ValueError, match=r"data.labels: the training data has label\(s\) \['neutral'\]"):
        labeled(tmp_path, train, val, labels=["positive", "negative", "mixed"])


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_missing_label_column_names_the_key_and_the_columns(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"train{suffix}"
    if suffix == ".jsonl":
        write_jsonl(path, [{"text": "a", "sentiment": "positive"}, {"text": "b", "sentiment": "negative"}])
    else:
        path.write_text("text,sentiment\na,positive\nb,negative\n")
    with pytest.raises(DataFileError) as excinfo:
        labeled(tmp_path, path)
    message = str(excinfo.value)
    assert message.startswith("data.train: ") and "'label'" in message and "data.label_column" in message
    assert "'sentiment'" in message


def test_an_empty_file_and_missing_labels_are_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataFileError, match="data.train: .*empty.jsonl is empty"):
        labeled(tmp_path, tmp_path / "empty.jsonl")
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(4) + [{"text": "no label", "label": None}])
    with pytest.raises(DataFileError, match=r"1 row\(s\) have no 'label' \(data.label_column\), the first is row 5"):
        labeled(tmp_path, train)
    tags = write_jsonl(tmp_path / "tags.jsonl", [{"tokens": ["a", "b"], "tags": ["O", "O"]},
                                                 {"tokens": ["c", "d"], "tags": ["O"]}] * 3)
    with pytest.raises(ValueError, match="row 2 has 2 words but 1 tags"):
        labeled(tmp_path, tags, tags, text_column="tokens", label_column="tags")


def test_labels_of_another_type_in_val_are_refused(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(6))
    val = write_jsonl(tmp_path / "val.jsonl", [{"text": "a", "label": 0.5}])
    with pytest.raises(DataFileError, match=r"data.val: labels are float \(regression\) but data.train's are string"):
        labeled(tmp_path, train, val)


def test_a_packed_objective_is_refused(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(12))
    data = LabeledTextData(train=str(train), tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=300)),
                           cache_dir=str(tmp_path / "cache"))
    trainer = Trainer(max_steps=1, accelerator="cpu", logger=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="model.objective CausalLM trains on packed text"):
        trainer.fit(LanguageModel(Backbone("gpt2", {"n_layer": 1, "n_embd": 32, "n_head": 2}), CausalLM()),
                    datamodule=data)


# -- the data-stage plugin hooks on labeled rows -------------------------------------------------------


class DropBroken(BiasMitigator):
    """Drops rows that mention 'broke', on train and val."""

    splits = ("train", "val")

    def process_text(self, examples, rng):
        keep = [i for i, t in enumerate(examples["text"]) if "broke" not in t]
        return {k: [v[i] for i in keep] for k, v in examples.items()}


class UpperCopies(Augmenter):
    """Adds an upper-cased copy of every row, label kept (training split only)."""

    def process_text(self, examples, rng):
        return {"text": examples["text"] + [t.upper() for t in examples["text"]], "label": examples["label"] * 2}


class WeighPositives(BiasMitigator):
    """Sampling weight 3 for positive rows, 1 otherwise."""

    def sample_weights(self, examples):
        return [3.0 if label == "positive" else 1.0 for label in examples["label"]]


def test_text_plugins_and_sample_weights_apply_to_labeled_rows(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(24))
    val = write_jsonl(tmp_path / "val.jsonl", sentiment_rows(12, offset=50))
    data = LabeledTextData(train=str(train), val=str(val), max_length=32, batch_size=4, seed=0,
                           tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=300)),
                           cache_dir=str(tmp_path / "cache"))
    model = LanguageModel(TINY_BERT, SequenceClassification(), augmenters=[UpperCopies()],
                          bias_mitigators=[DropBroken(), WeighPositives()])
    trainer = Trainer(max_steps=1, accelerator="cpu", logger=CSVLogger(tmp_path, name="run"),
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=data)
    # 24 rows, 4 of each kind; the 4 "broke"n screens are dropped, the rest doubled (on train only).
    assert data.labels.counts["train"] == {"negative": 8, "neutral": 16, "positive": 16}
    assert data.labels.counts["val"] == {"negative": 2, "neutral": 4, "positive": 4}
    assert len(data.datasets["train"]) == 40 and len(data.datasets["val"]) == 10
    texts = data.tokenizer.batch_decode(list(data.datasets["train"]["input_ids"]), skip_special_tokens=True)
    assert not any("broke" in t for t in texts)
    weights = data.train_weights.tolist()
    positive = data.labels.label2id["positive"]
    assert weights == [3.0 if y == positive else 1.0 for y in data.datasets["train"]["labels"]]
    sampler = data.train_dataloader().sampler  # the resumable sampler draws by the weights
    assert isinstance(sampler, ResumableSampler) and sampler.weights is data.train_weights
    saved = json.loads((Path(trainer.log_dir) / "labels.json").read_text())
    assert saved["names"] == ["negative", "neutral", "positive"] and saved["label2id"]["positive"] == 2
    assert saved["counts"]["val"] == data.labels.counts["val"]
    assert (Path(trainer.log_dir) / "tokenizer" / "tokenizer.json").is_file()


def test_a_text_plugin_on_word_lists_names_the_missing_column(tmp_path: Path) -> None:
    rows = [{"tokens": ["Quito", "in", "May"], "tags": ["B-LOC", "O", "B-DATE"]}] * 8
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    data = LabeledTextData(train=str(train), val=str(train), text_column="tokens", label_column="tags",
                           tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=300)), max_length=32,
                           cache_dir=str(tmp_path / "cache"))  # within TINY_BERT's 64 positions

    class NeedsText(Augmenter):
        def process_text(self, examples, rng):
            return {**examples, "text": [t.upper() for t in examples["text"]]}

    from lmforge.plugins.objectives.token_classification import TokenClassification

    trainer = Trainer(max_steps=1, accelerator="cpu", logger=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="NeedsText.process_text needs a 'text' column"):
        trainer.fit(LanguageModel(TINY_BERT, TokenClassification(), augmenters=[NeedsText()]), datamodule=data)


def test_a_malformed_json_row_is_named_without_suggesting_skipping_it(tmp_path: Path) -> None:
    # LabeledTextData has no skip_bad_lines (a dropped row would change the label counts): the message
    # must not point at an option it does not accept.
    path = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(6))
    path.write_text(path.read_text(encoding="utf-8") + '{"text": "broken", "label": \n', encoding="utf-8")
    with pytest.raises(DataFileError, match=r"train\.jsonl, line 7: malformed JSON") as caught:
        labeled(tmp_path, path)
    assert "skip_bad_lines" not in str(caught.value)
