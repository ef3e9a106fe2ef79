"""BlocklistFilter: whole-word terms and regular expressions, and a per-group report of what was dropped."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from lmforge.plugins.bias.blocklist_filter import BlocklistFilter


def test_terms_match_whole_words_and_regexes_match_as_written() -> None:
    texts = ["What an idiot.", "An idiotic plan.", "IDIOT!", "Those idiots left.", "Shut   up now.",
             "A sooo stuuupid idea.", "A fine day."]
    plugin = BlocklistFilter()  # the bundled example list
    out = plugin.process_text({"text": texts, "id": list(range(7))}, random.Random(0))
    assert out == {"text": ["An idiotic plan.", "A fine day."], "id": [1, 6]}
    case_sensitive = BlocklistFilter(ignore_case=False)
    assert not case_sensitive.blocked("IDIOT!") and case_sensitive.blocked("idiot!")


def test_report_shows_which_groups_lose_documents(caplog: pytest.LogCaptureFixture) -> None:
    plugin = BlocklistFilter(attribute_terms=["lmforge:bias/gender_pairs.tsv"])
    texts = ["She is no idiot.", "Her friend is a jerk.", "She sang.", "Her cat slept.",
             "He sang.", "His dog ran.", "He smiled.", "He and she are dumb.", "Rain fell."]
    plugin.process_text({"text": texts[:4]}, random.Random(0))  # two map batches accumulate
    plugin.process_text({"text": texts[4:]}, random.Random(0))
    assert plugin.seen == {"total": 9, "female": 5, "male": 4, "(no group)": 1}
    assert plugin.dropped == {"total": 3, "female": 3, "male": 1, "(no group)": 0}
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        plugin.setup(model=None)  # type: ignore[arg-type]
    assert "dropped 3 of 9 training documents (33.3 %)" in caplog.text
    assert "female: dropped 3 of 5 (60.0 %, 1.80x the overall rate)" in caplog.text
    assert "male: dropped 1 of 4 (25.0 %, 0.75x the overall rate)" in caplog.text


def test_bad_blocklists_are_named(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing here\n\n")
    with pytest.raises(ValueError, match=r"BlocklistFilter.blocklist: .*empty.txt holds no terms"):
        BlocklistFilter(blocklist=str(empty))
    broken = tmp_path / "broken.txt"
    broken.write_text("fine\nre:(unclosed\n")
    with pytest.raises(ValueError, match=r"broken.txt, line 2: invalid regular expression"):
        BlocklistFilter(blocklist=str(broken))
    with pytest.raises(FileNotFoundError, match="BlocklistFilter.blocklist: file not found"):
        BlocklistFilter(blocklist=str(tmp_path / "missing.txt"))
    empty_terms = tmp_path / "terms.tsv"
    empty_terms.write_text("# groups: a\tb\n")
    with pytest.raises(ValueError, match=r"BlocklistFilter.attribute_terms: .*terms.tsv holds no terms"):
        BlocklistFilter(attribute_terms=[str(empty_terms)])
