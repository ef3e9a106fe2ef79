"""Attribute lists: groups from the header or the arguments, whole-word matching, and errors naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmforge.plugins.bias.wordlists import find_groups, read_attribute_terms


def test_bundled_gender_list_names_its_groups() -> None:
    terms = read_attribute_terms("lmforge:bias/gender_pairs.tsv", "key")
    assert terms.groups == ("male", "female")
    lookup = terms.term_groups("key")
    assert lookup["he"] == 0 and lookup["her"] == 1 and lookup["mr"] == 0  # "mr." is matched as the word "mr"
    assert find_groups("Mr. Lee's wife, Priya.", lookup) == {0, 1}
    assert find_groups("Theresa heard the shepherd.", lookup) == set()  # words inside words do not count


def test_errors_name_the_file_and_the_line(tmp_path: Path) -> None:
    ragged = tmp_path / "ragged.tsv"
    ragged.write_text("old\tyoung\nelderly\tyouthful\tteen\n")
    with pytest.raises(ValueError, match=r"X.terms: .*ragged.tsv, line 2: 3 columns, but earlier rows have 2"):
        read_attribute_terms(str(ragged), "X.terms")
    ok = tmp_path / "ok.tsv"
    ok.write_text("old\tyoung\n")
    with pytest.raises(ValueError, match=r"X.terms: 3 group names \['a', 'b', 'c'\] for 2 columns"):
        read_attribute_terms(str(ok), "X.terms", ["a", "b", "c"])
    both = tmp_path / "both.tsv"
    both.write_text("# groups: old, young\nold\tyoung\nyoung\tnew\n")
    with pytest.raises(ValueError, match=r"'young' is listed under both 'young' and 'old'"):
        read_attribute_terms(str(both), "X.terms").term_groups("X.terms")
    spaced = tmp_path / "spaced.tsv"
    spaced.write_text("old man\tyoung man\n")
    with pytest.raises(ValueError, match=r"spaced.tsv, line 1: every entry must be a single word"):
        read_attribute_terms(str(spaced), "X.terms")

