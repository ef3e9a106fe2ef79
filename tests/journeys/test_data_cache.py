"""Training on the same files twice, then on an edited file, as a user does it:

    lmforge fit --config quickstart --data.init_args.train corpus/train.txt --data.init_args.val corpus/val.txt
    lmforge fit --config quickstart ...                 # the same command again
    echo "one more document" >> corpus/train.txt
    lmforge fit --config quickstart ...                 # after editing the training file

The first run tokenizes (its console shows the ``Tokenizing`` bars) and keeps the packed blocks in
``$LMFORGE_CACHE/blocks``. The second reads them from there: no tokenizing on its console, and the same
losses and final weights as the first, step for step. The edited file is tokenized again into a new entry,
and the run trains on different tokens.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from journey_kit import PROBE, Journeys, bundled_text, short_args


def entries(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "blocks").iterdir() if p.is_dir()) if (cache / "blocks").is_dir() else []


@pytest.mark.slow
def test_a_second_run_reads_its_blocks_from_the_cache_and_an_edited_file_is_read_again(journeys: Journeys,
                                                                                          tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "train.txt").write_text("\n".join(bundled_text("corpus/train.txt")[:600]) + "\n", encoding="utf-8")
    (corpus / "val.txt").write_text("\n".join(bundled_text("corpus/val.txt")[:60]) + "\n", encoding="utf-8")
    cache = tmp_path / "cache"  # this journey's own cache, so that the first run starts cold
    command = ["fit", "--config", "quickstart", *short_args("quickstart"), "--data.init_args.train",
               "corpus/train.txt", "--data.init_args.val", "corpus/val.txt", PROBE]

    first = journeys.lmforge(command, tmp_path, env={"LMFORGE_CACHE": str(cache)})
    first.expect_ok()
    assert "Tokenizing (train)" in first.output, first.explain("the first run showed no tokenizing")
    assert len(entries(cache)) == 1, first.explain(f"{cache}/blocks holds {entries(cache)}")

    second = journeys.lmforge(command, tmp_path, env={"LMFORGE_CACHE": str(cache)})
    second.expect_ok()
    assert "Tokenizing" not in second.output, second.explain("the second run tokenized again")
    assert second.probe("end")["losses"] == first.probe("end")["losses"]
    assert second.probe("end")["weights_sha256"] == first.probe("end")["weights_sha256"]
    assert len(entries(cache)) == 1

    with open(corpus / "train.txt", "a", encoding="utf-8") as f:
        f.write("A new document the user added, about rivers, stones and the light of the evening.\n")
    edited = journeys.lmforge(command, tmp_path, env={"LMFORGE_CACHE": str(cache)})
    edited.expect_ok()
    assert "Tokenizing (train)" in edited.output, edited.explain("the edited file was not tokenized again")
    assert len(entries(cache)) == 2
    assert edited.probe("end")["losses"] != first.probe("end")["losses"]
