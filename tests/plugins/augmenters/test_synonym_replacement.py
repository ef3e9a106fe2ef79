"""SynonymReplacement replaces round(alpha * words) words by synonyms from the bundled table and a user file."""

from __future__ import annotations

import json
import random

import pytest

from lmforge.plugins.augmenters._text import SynonymTable, read_synonyms
from lmforge.plugins.augmenters.synonym_replacement import SynonymReplacement, replace_word


@pytest.fixture
def user_tsv(tmp_path):
    path = tmp_path / "syn.tsv"
    path.write_text("# mine\nred\tcrimson,scarlet\nbig\tenormous\n", encoding="utf-8")
    return path


def test_replaces_the_advertised_number_of_words_with_synonyms(user_tsv):
    words = ["red", "big"] * 250  # every word has synonyms
    augmenter = SynonymReplacement(alpha=0.2, synonyms=str(user_tsv), bundled=False, copies=0)
    out = augmenter.process_text({"text": [" ".join(words)]}, random.Random(0))["text"][0].split()
    changed = [(a, b) for a, b in zip(words, out) if a != b]
    assert len(out) == len(words) and len(changed) == 100
    assert all(b in {"red": ["crimson", "scarlet"], "big": ["enormous"]}[a] for a, b in changed)


def test_words_without_synonyms_are_left_alone(user_tsv):
    augmenter = SynonymReplacement(alpha=0.5, synonyms=str(user_tsv), bundled=False, copies=0)
    text = "a red door and a blue window"
    out = augmenter.process_text({"text": [text]}, random.Random(0))["text"][0].split()
    assert out[1] in {"crimson", "scarlet"} and out[:1] + out[2:] == text.split()[:1] + text.split()[2:]


def test_punctuation_and_capitalisation_are_kept():
    assert replace_word('"Red,', "crimson") == '"Crimson,'
    assert replace_word("RED!", "crimson") == "CRIMSON!"
    assert replace_word("red.", "at last") == "at last."


def test_bundled_table_and_user_files_in_tsv_and_json(user_tsv, tmp_path):
    bundled = SynonymTable("T", None, bundled=True)
    assert "glad" in bundled.get("Happy,") and len(bundled.table) > 300
    merged = SynonymTable("T", str(user_tsv), bundled=True)
    assert merged.get("big") == ["enormous"]  # the user's entry replaces the bundled one
    assert merged.get("happy") == bundled.get("happy")
    user_json = tmp_path / "syn.json"
    user_json.write_text(json.dumps({"Rot": ["karminrot", "scharlachrot"]}), encoding="utf-8")
    assert read_synonyms(str(user_json), "T") == {"rot": ["karminrot", "scharlachrot"]}
    assert merged.fingerprint != bundled.fingerprint


def test_bad_synonym_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="SynonymReplacement: synonyms file not found"):
        SynonymReplacement(synonyms=str(tmp_path / "missing.tsv"))
    bad = tmp_path / "bad.tsv"
    bad.write_text("red crimson\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.tsv, line 1: expected 'word<TAB>synonym1,synonym2'"):
        SynonymReplacement(synonyms=str(bad))
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('["red"]', encoding="utf-8")
    with pytest.raises(ValueError, match="must hold one JSON object"):
        SynonymReplacement(synonyms=str(bad_json))
