"""Property tests on arbitrary Unicode text: the text augmenters, CDA, long-document tokenization and packing.

For any input: no crash; the same seed gives the same output; and nothing is lost that should not be:
originals are kept beside their copies, a swap keeps every word, a deletion keeps the others in order, an
insertion or a replacement touches nothing else, character noise never touches whitespace, digits or
punctuation; packing keeps every token but the last partial block; tokenizing a long document in pieces
gives the tokens of the whole.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lmforge.core.data.text import pack
from lmforge.core.data.tokenizer import TokenizerTraining, encode_long, split_long_text, train_tokenizer
from lmforge.core.registry import registry
from lmforge.plugins.augmenters._text import SynonymTable
from lmforge.plugins.augmenters.char_noise import CharNoise
from lmforge.plugins.augmenters.random_deletion import RandomDeletion, random_deletion
from lmforge.plugins.augmenters.random_insertion import RandomInsertion, random_insertion
from lmforge.plugins.augmenters.random_swap import RandomSwap, random_swap
from lmforge.plugins.augmenters.synonym_replacement import SynonymReplacement, replace_word, synonym_replacement

# derandomize: the same examples on every run (tests are seeded); no example database written to disk.
PROPERTY = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

TABLE = SynonymTable("test", None, bundled=True)
TABLE_WORDS = sorted(TABLE.table)[:40]

#: Any Unicode text, with spaces, tabs, newlines and words the synonym table knows mixed in.
texts = st.lists(
    st.one_of(st.text(max_size=12), st.sampled_from([" ", "  ", "\t", "\n", "\u3000", "\u00a0"]),
              st.sampled_from(TABLE_WORDS), st.sampled_from([w.upper() + "," for w in TABLE_WORDS])),
    max_size=25,
).map("".join)
batches = st.lists(texts, max_size=4)
seeds = st.integers(0, 2**32 - 1)
words_lists = texts.map(str.split)


def augmenters(copies: int) -> list:
    return [RandomDeletion(p=0.3, copies=copies), RandomSwap(alpha=0.3, copies=copies),
            RandomInsertion(alpha=0.3, copies=copies), SynonymReplacement(alpha=0.3, copies=copies),
            CharNoise(p=0.2, copies=copies)]


def is_subsequence(short: list[str], long: list[str]) -> bool:
    it = iter(long)
    return all(any(x == y for y in it) for x in short)


# -- the augmenters as plugins: any batch, any seed --------------------------------------------------


@pytest.mark.parametrize("copies", [0, 2])
@PROPERTY
@given(batch=batches, seed=seeds)
def test_augmenters_never_crash_are_seeded_and_keep_the_originals(copies: int, batch: list[str], seed: int) -> None:
    examples = {"text": batch, "label": list(range(len(batch)))}
    for augmenter in augmenters(copies):
        out = augmenter.process_text(examples, random.Random(seed))
        again = augmenter.process_text(examples, random.Random(seed))
        assert out == again, type(augmenter).__name__
        assert all(isinstance(t, str) for t in out["text"])
        n = len(batch)
        assert len(out["text"]) == len(out["label"]) == n * (copies + 1)
        if copies:
            assert out["text"][:n] == batch  # originals kept exactly
            assert out["label"] == list(range(n)) * (copies + 1)  # each copy keeps its document's label
        for original, augmented in zip(batch * max(1, copies), out["text"][n if copies else 0:]):
            if not original.split():
                assert augmented == original  # nothing to edit (no word, no letter): returned as it was


# -- the word operations: what each keeps ------------------------------------------------------------


@PROPERTY
@given(words=words_lists, seed=seeds, n=st.integers(0, 6))
def test_random_swap_keeps_every_word(words: list[str], seed: int, n: int) -> None:
    assert sorted(random_swap(words, n, random.Random(seed))) == sorted(words)


@PROPERTY
@given(words=words_lists, seed=seeds, p=st.floats(0.0, 1.0))
def test_random_deletion_keeps_the_rest_in_order_and_never_empties(words: list[str], seed: int, p: float) -> None:
    kept = random_deletion(words, p, random.Random(seed))
    assert is_subsequence(kept, words)
    assert bool(kept) == bool(words)


@PROPERTY
@given(words=words_lists, seed=seeds, n=st.integers(0, 6))
def test_random_insertion_only_adds_synonyms(words: list[str], seed: int, n: int) -> None:
    out = random_insertion(words, n, TABLE, random.Random(seed))
    assert is_subsequence(words, out) and len(out) - len(words) <= n
    reachable = set(words)  # as in EDA, a word inserted earlier may be drawn too: synonyms of synonyms
    for _ in range(n):
        reachable |= {s for w in reachable for s in TABLE.get(w)}
    extra = list(out)
    for w in words:  # remove the originals, in order; what is left was inserted
        extra.remove(w)
    assert all(e in reachable for e in extra)


@PROPERTY
@given(words=words_lists, seed=seeds, n=st.integers(0, 6))
def test_synonym_replacement_changes_only_words_with_synonyms(words: list[str], seed: int, n: int) -> None:
    out = synonym_replacement(words, n, TABLE, random.Random(seed))
    assert len(out) == len(words)
    changed = [(w, o) for w, o in zip(words, out) if w != o]
    assert len(changed) <= n
    assert all(o in {replace_word(w, s) for s in TABLE.get(w)} for w, o in changed)


@PROPERTY
@given(text=texts, seed=seeds, p=st.floats(0.0, 1.0))
def test_char_noise_never_touches_whitespace_digits_or_punctuation(text: str, seed: int, p: float) -> None:
    out = CharNoise(p=p).augment(text, random.Random(seed))
    assert [c for c in out if not c.isalpha()] == [c for c in text if not c.isalpha()]
    assert len(out) <= len(text)


# -- CDA -----------------------------------------------------------------------------------------------


def counterfactual_augmentation():
    try:
        return registry().get("bias_mitigator", "CounterfactualAugmentation").cls
    except KeyError:
        return None


@pytest.mark.skipif(counterfactual_augmentation() is None,
                    reason="the CounterfactualAugmentation plugin (bias mitigators) is not installed in this build")
@PROPERTY
@given(batch=batches, seed=seeds)
def test_cda_never_crashes_is_seeded_and_keeps_the_originals(batch: list[str], seed: int) -> None:
    cda = counterfactual_augmentation()()
    examples = {"text": batch, "label": list(range(len(batch)))}
    out = cda.process_text(examples, random.Random(seed))
    assert out == cda.process_text(examples, random.Random(seed))
    assert all(isinstance(t, str) for t in out["text"])
    assert len(out["text"]) == len(out["label"])
    assert all(t in out["text"] for t in batch)  # two-sided CDA keeps every original


# -- packing -------------------------------------------------------------------------------------------


@PROPERTY
@given(docs=st.lists(st.lists(st.integers(0, 50_000), max_size=40), max_size=30), block_size=st.integers(1, 40))
def test_packing_keeps_every_token_but_the_last_partial_block(docs: list[list[int]], block_size: int) -> None:
    blocks, block_docs, dropped = pack(docs, block_size)
    flat = [t for d in docs for t in d]
    assert blocks.shape == (len(flat) // block_size, block_size)
    assert blocks.flatten().tolist() + flat[len(flat) - dropped:] == flat
    assert 0 <= dropped < block_size
    starts = np.cumsum([0] + [len(d) for d in docs])
    for i in range(len(blocks)):  # the document holding each block's first token
        d = block_docs[i]
        assert starts[d] <= i * block_size < starts[d + 1]


# -- long documents ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizers() -> dict:
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(TABLE_WORDS) for _ in range(15)) for _ in range(200)]
    return {"bpe": train_tokenizer(corpus, TokenizerTraining(vocab_size=300), "bpe"),
            "wordpiece": train_tokenizer(corpus, TokenizerTraining(vocab_size=120), "wordpiece")}


@settings(PROPERTY, max_examples=300)  # cheap: no tokenizer
@given(text=texts, max_chars=st.integers(1, 30))
def test_long_text_pieces_join_back_and_respect_the_limit(text: str, max_chars: int) -> None:
    pieces = list(split_long_text(text, max_chars))
    assert "".join(pieces) == text
    assert all(0 < len(p) <= max_chars for p in pieces) or pieces == [""]
    start = 0
    for piece in pieces[:-1]:  # a hard cut only where the window holds no space before a word
        cut = start + len(piece)
        if not is_soft_cut(text, cut):
            assert cut == start + max_chars
            assert not any(is_soft_cut(text, j) for j in range(start + 1, cut))
        start = cut


def is_soft_cut(text: str, i: int) -> bool:
    """A cut before ``text[i]`` is soft when that is a space followed by a non-space."""
    return text[i] == " " and i + 1 < len(text) and not text[i + 1].isspace()


@pytest.mark.parametrize("algorithm", ["bpe", "wordpiece"])
@settings(PROPERTY, max_examples=40)
@given(text=texts, max_chars=st.integers(2, 30))
def test_a_long_document_in_pieces_has_the_tokens_of_the_whole(tokenizers, algorithm: str, text: str,
                                                               max_chars: int) -> None:
    pieces = list(split_long_text(text, max_chars))
    # Where a piece was cut at a space before a word, the tokens must be exactly those of the whole text.
    cuts = np.cumsum([len(p) for p in pieces])[:-1]
    assume(all(is_soft_cut(text, int(c)) for c in cuts))
    tokenizer = tokenizers[algorithm]
    assert encode_long(tokenizer, text, max_chars).tolist() == tokenizer(text)["input_ids"]


@settings(PROPERTY, max_examples=40)
@given(text=texts)
def test_byte_level_tokenization_loses_no_character(tokenizers, text: str) -> None:
    tokenizer = tokenizers["bpe"]
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
