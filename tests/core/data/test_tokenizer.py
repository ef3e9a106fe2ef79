"""lmforge.core.data.tokenizer: training BPE / WordPiece tokenizers and loading local ones."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from lmforge.core.data.tokenizer import (
    TokenizerTraining,
    document_separator,
    load_tokenizer,
    train_tokenizer,
    without_appended_eos,
)

WORDS = "the cat sat on a mat and the dog ran to the park while birds sang in tall green trees".split()


def _texts(n: int = 200, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 16))) + "." for _ in range(n)]


@pytest.fixture(scope="module")
def bpe():
    return train_tokenizer(_texts(), TokenizerTraining(vocab_size=300), "bpe")


@pytest.fixture(scope="module")
def wordpiece():
    return train_tokenizer(_texts(), TokenizerTraining(vocab_size=120), "wordpiece")


def test_bpe_encodes_a_prompt_as_itself(bpe) -> None:
    """No EOS appended (as GPT-2's tokenizer): a prompt given to generate/pipeline is continued, not ended."""
    assert bpe.eos_token == "<|endoftext|>"
    for text in _texts(20, seed=1):
        ids = bpe(text)["input_ids"]
        assert ids == bpe.convert_tokens_to_ids(bpe.tokenize(text)) and bpe.eos_token_id not in ids
        assert bpe.decode(ids) == text  # byte-level: the text comes back exactly
    assert bpe("a", "b")["input_ids"] == [*bpe("a")["input_ids"], bpe.eos_token_id, *bpe("b")["input_ids"]]
    assert len(bpe) == 300
    assert document_separator(bpe) == [bpe.eos_token_id]  # packing ends each document with EOS itself


def test_old_bpe_tokenizer_that_appends_eos_is_fixed_for_prompts(bpe) -> None:
    from tokenizers import processors

    old = copy.deepcopy(bpe)  # lmforge's bpe before tokenizer format 2: "$A <|endoftext|>"
    eos = bpe.eos_token
    old.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", pair=f"$A {eos} $B:1 {eos}:1", special_tokens=[(eos, bpe.eos_token_id)])
    assert old("the cat")["input_ids"][-1] == bpe.eos_token_id
    assert document_separator(old) == []  # it closes documents itself: packing adds nothing
    fixed = without_appended_eos(old)
    assert fixed("the cat")["input_ids"] == bpe("the cat")["input_ids"]
    assert old("the cat")["input_ids"][-1] == bpe.eos_token_id  # the original is left as it was
    assert without_appended_eos(bpe) is bpe


def test_wordpiece_wraps_every_document_in_cls_sep(wordpiece) -> None:
    for text in _texts(20, seed=1):
        ids = wordpiece(text.capitalize())["input_ids"]
        tokens = wordpiece.convert_ids_to_tokens(ids)
        assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
        assert "[CLS]" not in tokens[1:] and "[SEP]" not in tokens[:-1]
        assert wordpiece.decode(ids[1:-1]) == text  # lower-cased, nothing lost
    assert document_separator(wordpiece) == []  # [CLS] ... [SEP] already separates packed documents
    assert wordpiece.mask_token == "[MASK]" and wordpiece.pad_token == "[PAD]"
    assert wordpiece.convert_ids_to_tokens(wordpiece("zebra")["input_ids"])[1] != "zebra"  # unseen: pieces or [UNK]


@pytest.mark.parametrize("algorithm", ["bpe", "wordpiece"])
def test_saved_tokenizer_reloads_offline_and_encodes_identically(tmp_path: Path, algorithm: str, bpe, wordpiece) -> None:
    tok = bpe if algorithm == "bpe" else wordpiece
    tok.save_pretrained(str(tmp_path / "tok"))
    for reloaded in (AutoTokenizer.from_pretrained(str(tmp_path / "tok"), local_files_only=True),
                     load_tokenizer(tmp_path / "tok")):
        assert reloaded.is_fast
        texts = _texts(30, seed=2) + ["Unseen words: zebra, quokka!"]
        assert reloaded(texts)["input_ids"] == tok(texts)["input_ids"]
        assert reloaded.all_special_ids == tok.all_special_ids
        assert (reloaded.eos_token_id, reloaded.mask_token_id, reloaded.pad_token_id) == (
            tok.eos_token_id, tok.mask_token_id, tok.pad_token_id)


def _trained_four_times(algorithm: str) -> set[str]:
    training = TokenizerTraining(vocab_size=300 if algorithm == "bpe" else 150)
    return {train_tokenizer(_texts(), training, algorithm).backend_tokenizer.to_str() for _ in range(4)}


def test_bpe_training_is_deterministic() -> None:
    assert len(_trained_four_times("bpe")) == 1  # same vocabulary, same ids, same merges


@pytest.mark.xfail(reason="UPSTREAM: WordPiece training is not deterministic (upstream huggingface/tokenizers#1794: "
                          "'##' pieces get ids in hash-map order, which also changes merges); lmforge trains "
                          "once, caches, and keeps the tokenizer with the run and its checkpoints instead",
                   strict=True)
def test_wordpiece_training_is_deterministic() -> None:
    assert len(_trained_four_times("wordpiece")) == 1


@pytest.mark.parametrize("algorithm", ["bpe", "wordpiece"])
def test_vocab_size_not_above_the_special_tokens_is_refused(algorithm: str) -> None:
    with pytest.raises(ValueError, match=r"data\.tokenizer\.train\.vocab_size.*got 3"):
        train_tokenizer(_texts(), TokenizerTraining(vocab_size=3), algorithm)


def test_bpe_vocab_size_below_the_byte_alphabet_is_refused() -> None:
    with pytest.raises(ValueError, match=r"data\.tokenizer\.train\.vocab_size"):
        train_tokenizer(_texts(), TokenizerTraining(vocab_size=100), "bpe")


def test_load_tokenizer_of_a_missing_directory_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"data\.tokenizer\.path: .*no-such-tokenizer"):
        load_tokenizer(tmp_path / "no-such-tokenizer")
