"""CounterfactualAugmentation: exact rewrites (case, punctuation, possessives, her -> him/his), two- and
one-sided outputs, and the validation split left untouched."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from lightning.pytorch import Trainer

from lmforge.core.backbone import Backbone
from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining
from lmforge.core.module import LanguageModel
from lmforge.plugins.bias.counterfactual_augmentation import CounterfactualAugmentation
from lmforge.plugins.objectives.causal_lm import CausalLM

REWRITES = [
    ("He said she lost her keys.", "She said he lost his keys."),
    ("I gave her the book.", "I gave him the book."),
    ("We saw her.", "We saw him."),
    ("Everyone thanked her, and she smiled.", "Everyone thanked him, and he smiled."),
    ("Her new car is red.", "His new car is red."),
    ("She did it herself; his sister laughed.", "He did it himself; her brother laughed."),
    ("THE KING AND HIS MEN", "THE QUEEN AND HER WOMEN"),
    ("John's dog met Mr. Smith's wife.", "Mary's dog met Mrs. Smith's husband."),
    ("The boys' bikes and the girl’s kite.", "The girls' bikes and the boy’s kite."),
    ("he's sure she'll come", "she's sure he'll come"),
    ('"Is he here?" asked the waitress.', '"Is she here?" asked the waiter.'),
    ("Mrs. Novak is a hairdresser; she starts at eight.", "Mr. Novak is a hairdresser; he starts at eight."),
    ("The weather was fine all day.", "The weather was fine all day."),
    ("Theresa, Heather and Hermione", "Theresa, Heather and Hermione"),  # no swaps inside words
]


@pytest.mark.parametrize(("text", "expected"), REWRITES)
def test_exact_rewrites(text: str, expected: str) -> None:
    cda = CounterfactualAugmentation()
    assert cda.swap(text) == expected
    if expected != text and "her" not in text.lower().split():  # her -> him/his is not invertible
        assert cda.swap(expected) == text


def test_two_sided_keeps_originals_and_appends_counterfactuals() -> None:
    cda = CounterfactualAugmentation()
    texts = ["He ran.", "The sky is blue.", "Her cat slept."]
    out = cda.process_text({"text": texts, "id": [1, 2, 3]}, random.Random(0))
    # Only documents with attribute words get a copy; other columns follow their row.
    assert out == {"text": texts + ["She ran.", "His cat slept."], "id": [1, 2, 3, 1, 3]}


def test_one_sided_replaces_and_probability_draws_from_the_given_rng() -> None:
    texts = [f"He ran {i} miles." for i in range(200)]
    out = CounterfactualAugmentation(mode="one_sided").process_text({"text": texts}, random.Random(0))
    assert out["text"] == [t.replace("He", "She") for t in texts]
    half = CounterfactualAugmentation(mode="one_sided", probability=0.5)
    first = half.process_text({"text": texts}, random.Random(1))["text"]
    assert first == half.process_text({"text": texts}, random.Random(1))["text"]
    flipped = sum(t.startswith("She") for t in first)
    assert 70 < flipped < 130 and len(first) == 200


def test_extra_pair_files_extend_the_gender_list(tmp_path: Path) -> None:
    extra = tmp_path / "religion.tsv"
    extra.write_text("# extra pairs\nchurch\tmosque\n")
    cda = CounterfactualAugmentation(pairs=["lmforge:bias/gender_pairs.tsv", str(extra)])
    assert cda.swap("He went to the Church.") == "She went to the Mosque."


def test_bad_pair_files_are_named(tmp_path: Path) -> None:
    empty = tmp_path / "empty.tsv"
    empty.write_text("# only a comment\n")
    with pytest.raises(ValueError, match=r"CounterfactualAugmentation.pairs: .*empty.tsv holds no terms"):
        CounterfactualAugmentation(pairs=[str(empty)])
    ambiguous = tmp_path / "ambiguous.tsv"
    ambiguous.write_text("lead\tfollow\nlead\tguide\n")
    with pytest.raises(ValueError, match=r"'lead' pairs with \['follow', 'guide'\]"):
        CounterfactualAugmentation(pairs=[str(ambiguous)])
    with pytest.raises(FileNotFoundError, match="missing.tsv"):
        CounterfactualAugmentation(pairs=[str(tmp_path / "missing.tsv")])
    with pytest.raises(ValueError, match="mode must be"):
        CounterfactualAugmentation(mode="both")  # type: ignore[arg-type]


def test_training_split_only(tmp_path: Path) -> None:
    train = tmp_path / "train.txt"
    val = tmp_path / "val.txt"
    train.write_text("\n".join(["He fixed the old car and his friend helped."] * 40) + "\n")
    val.write_text("\n".join(["He read his book in the garden."] * 20) + "\n")
    data = TextData(train=str(train), val=str(val), block_size=16, batch_size=2, seed=0,
                    tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=300)), cache_dir=str(tmp_path / "c"))
    model = LanguageModel(Backbone("gpt2", {"n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 32}),
                          CausalLM(), bias_mitigators=[CounterfactualAugmentation()])
    Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0).fit(model, datamodule=data)
    decode = data.tokenizer.decode
    train_text = decode(data.datasets["train"].blocks.flatten().tolist())
    val_text = decode(data.datasets["val"].blocks.flatten().tolist())
    assert "She fixed the old car and her friend helped." in train_text
    assert "He fixed the old car and his friend helped." in train_text
    assert "She" not in val_text and "her" not in val_text
