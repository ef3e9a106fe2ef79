"""RandomInsertion inserts round(alpha * words) synonyms of the document's own words."""

from __future__ import annotations

import random

from lmforge.plugins.augmenters.random_insertion import RandomInsertion

TABLE = {"red": ["crimson", "scarlet"], "big": ["enormous"]}


def test_inserts_the_advertised_number_of_synonyms(tmp_path):
    path = tmp_path / "syn.tsv"
    path.write_text("red\tcrimson,scarlet\nbig\tenormous\n", encoding="utf-8")
    words = ["red", "big", "door"] * 100
    augmenter = RandomInsertion(alpha=0.1, synonyms=str(path), bundled=False, copies=0)
    out = augmenter.process_text({"text": [" ".join(words)]}, random.Random(0))["text"][0].split()
    assert len(out) == len(words) + 30
    inserted = list(out)
    for word in words:  # the originals are still there, in order; what is left was inserted
        inserted.remove(word)
    assert len(inserted) == 30 and set(inserted) <= {"crimson", "scarlet", "enormous"}


def test_no_synonym_no_change(tmp_path):
    path = tmp_path / "syn.tsv"
    path.write_text("red\tcrimson\n", encoding="utf-8")
    augmenter = RandomInsertion(alpha=0.5, synonyms=str(path), bundled=False, copies=0)
    assert augmenter.process_text({"text": ["a blue door"]}, random.Random(0))["text"] == ["a blue door"]
