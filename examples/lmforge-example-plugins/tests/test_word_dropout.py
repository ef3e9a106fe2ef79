"""WordDropout: lmforge's plugin contract, its rates and rules, and its declared order."""

import random

import pytest

from lmforge.core.backbone import Backbone
from lmforge.core.module import LanguageModel
from lmforge.core.plugins import Augmenter
from lmforge.core.registry import registry
from lmforge.testing import check_plugin
from lmforge_example_plugins import WordDropout
from lmforge_example_plugins.word_dropout import word_dropout


def test_keeps_the_plugin_contract():
    report = check_plugin(WordDropout)
    assert "causal_lm: validation split untouched" in report.passed
    check_plugin(WordDropout, init_args={"p": 0.5, "replacement": "<unk>"}, tasks=["causal_lm"])


def test_drops_about_p_of_the_words():
    words = [f"w{i}" for i in range(20_000)]
    kept = word_dropout(words, 0.3, random.Random(0))
    assert len(kept) / len(words) == pytest.approx(0.7, abs=0.01)
    survivors = set(kept)
    assert kept == [w for w in words if w in survivors]  # order kept


def test_replacement_takes_the_place_of_dropped_words():
    words = "the cat sat on the mat".split()
    assert word_dropout(words, 1.0, random.Random(0), "<unk>") == ["<unk>"] * 6
    assert word_dropout(words, 0.0, random.Random(0), "<unk>") == words


def test_a_document_is_never_emptied():
    assert word_dropout(["only", "two"], 1.0, random.Random(0)) == ["only", "two"]


def test_process_text_keeps_other_columns_and_untouched_text_verbatim():
    examples = {"text": ["a  b", "c d e"], "label": [1, 2]}
    assert WordDropout(p=0.0).process_text(examples, random.Random(0)) == examples
    out = WordDropout(p=1.0, replacement="_").process_text(examples, random.Random(0))
    assert out == {"text": ["_ _", "_ _ _"], "label": [1, 2]}


def test_refuses_bad_arguments():
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        WordDropout(p=2.0)
    with pytest.raises(ValueError, match="one word without spaces"):
        WordDropout(replacement="two words")


def test_runs_after_synonym_replacement_whatever_the_recipe_order():
    info = registry().plugins["augmenter"].get("SynonymReplacement")
    synonyms = info.cls() if info is not None else type("SynonymReplacement", (Augmenter,), {})()
    dropout = WordDropout()
    model = LanguageModel(Backbone("gpt2"), registry().get("objective", "CausalLM").cls(),
                          augmenters=[dropout, synonyms])
    assert model.data_plugins() == [synonyms, dropout]
