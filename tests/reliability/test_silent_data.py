"""TextData never drops or alters input without a word.

Rows whose text is missing, null, a number, a boolean, a list or an object, and text holding NUL characters,
are refused with their file and row numbers, or skipped under ``data.skip_bad_lines`` with a count per file;
exactly the good rows are read then. A UTF-8 byte order mark is the encoding's mark, not text. ``csv``
cells arrive as written (``NA``, ``null``, ``007``). In every case the data files are left as they were.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from reliability_kit import digests

from lmforge.core.data.files import DataFileError, documents_dataset

BAD_VALUES = {"missing": None, "null": "null", "number": "5", "float": "2.5", "boolean": "true", "list": "[1, 2]",
              "object": '{"a": 1}', "NUL": '"nul \\u0000 inside"'}


def jsonl_with_bad_rows(path: Path, n: int = 40) -> tuple[dict[int, str], list[str]]:
    """``n`` rows, one bad row of each kind spread among them; returns {line: kind} and the good texts."""
    lines, bad, good = [], {}, []
    kinds = list(BAD_VALUES)
    for i in range(n):
        line_number = i + 1
        if i % 5 == 2 and kinds:
            kind = kinds.pop(0)
            value = BAD_VALUES[kind]
            lines.append(json.dumps({"id": i}) if value is None else f'{{"id": {i}, "text": {value}}}')
            bad[line_number] = kind
        else:
            text = f"document number {i} has some words"
            lines.append(json.dumps({"id": i, "text": text}))
            good.append(text)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return bad, good


def read(path: Path | list[Path], tmp_path: Path, skip: bool = False) -> list[str]:
    paths = path if isinstance(path, list) else [path]
    return documents_dataset(paths, "text", "data.train", str(tmp_path / "cache"), skip_bad_lines=skip)["text"]


def test_jsonl_rows_without_text_are_refused_with_their_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    bad, _ = jsonl_with_bad_rows(path)
    before = digests(path)
    with pytest.raises(DataFileError) as excinfo:
        read(path, tmp_path)
    message = str(excinfo.value)
    assert message.startswith(f"data.train: {path}: {len(bad)} of 40 lines cannot be documents")
    expected = {"missing": "no 'text' field", "null": "'text' is null", "number": "'text' is a number (5)",
                "float": "'text' is a number (2.5)", "boolean": "'text' is a boolean (true)",
                "list": "'text' is a list", "object": "'text' is an object", "NUL": "'text' holds a NUL character"}
    for line, kind in bad.items():
        assert f"line {line}: {expected[kind]}" in message, (kind, message)
    assert "data.skip_bad_lines: true" in message
    assert digests(path) == before


def test_skip_bad_lines_reads_exactly_the_good_rows_and_counts_the_rest(tmp_path: Path, caplog) -> None:
    path = tmp_path / "docs.jsonl"
    bad, good = jsonl_with_bad_rows(path)
    before = digests(path)
    with caplog.at_level(logging.WARNING, logger="lmforge.core.data.rows"):
        texts = read(path, tmp_path, skip=True)
    assert texts == good
    [warning] = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert f"data.train: skipped {len(bad)} line(s) of {path}" in warning
    assert "lines " + ", ".join(map(str, sorted(bad))) in warning
    assert digests(path) == before


def test_bad_rows_are_counted_per_file(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"text": "fine"}\n{"text": null}\n', encoding="utf-8")
    b.write_text('{"text": 3}\n{"text": "fine too"}\n{"text": []}\n', encoding="utf-8")
    with pytest.raises(DataFileError) as excinfo:
        read([a, b], tmp_path)
    message = str(excinfo.value)
    assert f"{a}, line 2: 'text' is null" in message
    assert f"{b}: 2 of 3 lines cannot be documents (line 1: 'text' is a number (3)" in message


def test_a_utf8_bom_is_the_encoding_mark_not_text(tmp_path: Path) -> None:
    bom = "\ufeff"
    (tmp_path / "a.txt").write_text(bom + "first line\nsecond line\n", encoding="utf-8")
    (tmp_path / "a.jsonl").write_text(bom + '{"text": "first line"}\n{"text": "second line"}\n', encoding="utf-8")
    (tmp_path / "a.csv").write_text(bom + "text,id\nfirst line,1\nsecond line,2\n", encoding="utf-8")
    for name in ("a.txt", "a.jsonl", "a.csv"):
        assert read(tmp_path / name, tmp_path) == ["first line", "second line"], name
    # A U+FEFF inside the text (a zero-width no-break space) is the writer's, and is kept.
    (tmp_path / "b.txt").write_text("one\ufefftwo\n", encoding="utf-8")
    assert read(tmp_path / "b.txt", tmp_path) == ["one\ufefftwo"]


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "csv", "parquet"])
def test_nul_characters_are_refused_with_the_row_or_skipped(fmt: str, tmp_path: Path, caplog) -> None:
    texts = ["clean one", "nul \x00 inside", "clean two"]
    path = tmp_path / f"docs.{fmt}"
    if fmt == "txt":
        path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    elif fmt == "csv":
        path.write_text("text\n" + "\n".join(texts) + "\n", encoding="utf-8")
    else:
        pq.write_table(pa.table({"text": texts}), path)
    before = digests(path)
    with pytest.raises(DataFileError, match=r"(line|row) 2: .*NUL character") as excinfo:
        read(path, tmp_path)
    assert str(path) in str(excinfo.value)
    with caplog.at_level(logging.WARNING, logger="lmforge.core.data.rows"):
        assert read(path, tmp_path, skip=True) == ["clean one", "clean two"]
    assert any("skipped 1" in r.getMessage() for r in caplog.records)
    assert digests(path) == before


def test_csv_cells_arrive_as_written(tmp_path: Path, caplog) -> None:
    path = tmp_path / "docs.csv"
    path.write_text("text,id\nNA,1\nnull,2\n007,3\n,4\nN/A,5\n", encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="lmforge.core.data.files"):
        assert read(path, tmp_path) == ["NA", "null", "007", "N/A"]
    assert any("left out 1 of 5 rows" in r.getMessage() for r in caplog.records)  # the empty cell, counted


def test_an_all_numeric_csv_text_column_stays_text(tmp_path: Path) -> None:
    path = tmp_path / "docs.csv"
    path.write_text("text\n007\n12\n3.50\n", encoding="utf-8")
    assert read(path, tmp_path) == ["007", "12", "3.50"]


def test_parquet_nulls_are_refused_with_the_row_and_a_non_text_column_is_named(tmp_path: Path) -> None:
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"text": ["one", None, "three"]}), nulls)
    with pytest.raises(DataFileError, match=rf"{nulls}, row 2: 'text' is null"):
        read(nulls, tmp_path)
    assert read(nulls, tmp_path, skip=True) == ["one", "three"]
    numbers = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"text": [1, 2, 3]}), numbers)
    for skip in (False, True):
        with pytest.raises(DataFileError, match=r"column 'text' \(data.text_column\) holds int64 values, not text"):
            read(numbers, tmp_path, skip=skip)


def test_streaming_refuses_a_bad_row_when_it_reaches_it(tmp_path: Path) -> None:
    from lmforge.core.data.streaming import StreamingBlocks

    path = tmp_path / "docs.txt"
    path.write_text("\ufeffclean one\nnul \x00 inside\nclean two\n", encoding="utf-8")
    stream = StreamingBlocks([path], None, 8)
    with pytest.raises(DataFileError, match="NUL character"):
        list(stream.documents(0, 1))
    kept = list(StreamingBlocks([path], None, 8, skip_bad_rows=True).documents(0, 1))
    assert kept == ["clean one", "clean two"]  # and the BOM is not text here either
