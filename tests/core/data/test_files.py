"""lmforge.core.data.files: finding data files and reading them, with errors that name the key and the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lmforge.core.data.files import DataFileError, bundled_data_dir, documents_dataset, resolve_files


def _read(path: Path, tmp_path: Path, text_column: str = "text", key: str = "data.train"):
    return documents_dataset([path], text_column, key, str(tmp_path / "hf-cache"))


# -- resolve_files -------------------------------------------------------------------------------


def test_resolve_files_expands_globs_in_sorted_order(tmp_path: Path) -> None:
    for name in ("b.txt", "a.txt", "c.txt"):
        (tmp_path / name).write_text("some text\n")
    (tmp_path / "notes.md").write_text("not data\n")
    assert resolve_files([str(tmp_path / "*.txt")], "data.train") == [tmp_path / n for n in ("a.txt", "b.txt", "c.txt")]


def test_bundled_prefix_resolves_to_the_packaged_corpus() -> None:
    [path] = resolve_files(["lmforge:corpus/train.txt"], "data.train")
    assert path == bundled_data_dir() / "corpus" / "train.txt"
    assert path.is_file() and path.stat().st_size > 0


@pytest.mark.parametrize("case", ["missing", "empty", "no_match", "extension"])
def test_resolve_files_errors_name_the_key_and_the_file(tmp_path: Path, case: str) -> None:
    if case == "missing":
        pattern, named = str(tmp_path / "nope.txt"), "nope.txt"
    elif case == "empty":
        (tmp_path / "empty.txt").write_text("")
        pattern, named = str(tmp_path / "empty.txt"), "empty.txt"
    elif case == "no_match":
        pattern, named = str(tmp_path / "shards" / "*.jsonl"), "*.jsonl"
    else:
        (tmp_path / "corpus.docx").write_text("text")
        pattern, named = str(tmp_path / "corpus.docx"), "corpus.docx"
    with pytest.raises(DataFileError) as excinfo:
        resolve_files([pattern], "data.val")
    message = str(excinfo.value)
    assert message.startswith("data.val: ")
    assert named in message
    if case == "extension":
        assert "'.docx'" in message and ".txt" in message  # says what would work


def test_resolve_files_refuses_mixed_formats(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("text\n")
    (tmp_path / "b.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(DataFileError, match=r"^data\.train: mixes file formats \(json, text\)"):
        resolve_files([str(tmp_path / "a.txt"), str(tmp_path / "b.jsonl")], "data.train")


def test_mixed_formats_error_names_the_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("text\n")
    (tmp_path / "b.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(DataFileError) as excinfo:
        resolve_files([str(tmp_path / "a.txt"), str(tmp_path / "b.jsonl")], "data.train")
    assert "a.txt" in str(excinfo.value) and "b.jsonl" in str(excinfo.value)


# -- documents_dataset ---------------------------------------------------------------------------


def test_txt_is_one_document_per_line_without_empty_lines(tmp_path: Path) -> None:
    path = tmp_path / "docs.txt"
    path.write_text("first document\n\n   \nsecond one\n\t\nthird\n", encoding="utf-8")
    ds = _read(path, tmp_path)
    assert ds.column_names == ["text"]
    assert ds["text"] == ["first document", "second one", "third"]


@pytest.mark.parametrize("suffix", [".txt", ".csv"])
def test_invalid_utf8_is_reported_at_its_byte_offset(tmp_path: Path, suffix: str) -> None:
    head = "text\nok\n".encode() if suffix == ".csv" else "caf\u00e9 line one\n".encode()
    data = head + b"bad \xff byte\n"
    offset = data.index(b"\xff")
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(data)
    with pytest.raises(DataFileError) as excinfo:
        _read(path, tmp_path)
    message = str(excinfo.value)
    assert message.startswith("data.train: ") and str(path) in message
    assert f"offset {offset} " in message


def test_invalid_utf8_in_jsonl_is_a_data_file_error(tmp_path: Path) -> None:
    data = b'{"text": "fine"}\n{"text": "bad \xff byte"}\n'
    offset = data.index(b"\xff")
    path = tmp_path / "broken.jsonl"
    path.write_bytes(data)
    with pytest.raises(DataFileError, match=f"offset {offset} "):
        _read(path, tmp_path)


def test_invalid_utf8_offset_after_a_character_split_across_read_chunks(tmp_path: Path) -> None:
    # "\u20ac" is 3 bytes; it starts on the last byte of the first 1 MiB chunk.
    data = b"a" * ((1 << 20) - 1) + "\u20ac".encode() + b"\nxx\xff\n"
    offset = data.index(b"\xff")
    path = tmp_path / "big.txt"
    path.write_bytes(data)
    with pytest.raises(DataFileError, match=f"offset {offset} "):
        _read(path, tmp_path)


def test_truncated_utf8_at_end_of_file_is_reported(tmp_path: Path) -> None:
    data = b"hello\nworld \xe2\x82"  # the first two bytes of "\u20ac"
    path = tmp_path / "cut.txt"
    path.write_bytes(data)
    with pytest.raises(DataFileError, match="offset 12 "):
        _read(path, tmp_path)


def test_malformed_jsonl_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c"\n{"text": "d"}\n', encoding="utf-8")
    with pytest.raises(DataFileError) as excinfo:
        _read(path, tmp_path)
    message = str(excinfo.value)
    assert message.startswith("data.train: ") and str(path) in message
    assert "line 3" in message and "line 4" not in message


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_missing_text_column_names_it_and_lists_the_present_ones(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"docs{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps({"body": b, "label": i}) + "\n" for i, b in enumerate(["x", "y"])))
    else:
        path.write_text("body,label\nx,0\ny,1\n")
    with pytest.raises(DataFileError) as excinfo:
        _read(path, tmp_path, text_column="content", key="data.val")
    message = str(excinfo.value)
    assert message.startswith("data.val: ") and path.name in message
    assert "'content'" in message and "data.text_column" in message
    assert "'body'" in message and "'label'" in message


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_text_column_is_renamed_to_text(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"docs{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps({"id": i, "body": b}) + "\n" for i, b in enumerate(["one", "", "two"])))
    else:
        path.write_text("id,body\n0,one\n1,\n2,two\n")
    ds = _read(path, tmp_path, text_column="body")
    assert "text" in ds.column_names and "body" not in ds.column_names
    assert ds["text"] == ["one", "two"]  # the empty row is dropped
    assert ds["id"] == [0, 2]


def test_text_column_renaming_when_a_text_column_also_exists(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "title a", "body": "one"}\n{"text": "title b", "body": "two"}\n')
    try:
        ds = _read(path, tmp_path, text_column="body")
    except DataFileError as exc:  # refusing is fine too, if the message says which key to change
        assert "data.text_column" in str(exc)
    else:
        assert ds["text"] == ["one", "two"]


def test_a_file_is_hashed_once_per_process_until_it_changes(tmp_path, monkeypatch) -> None:
    import hashlib

    from lmforge.core.data import files

    path = tmp_path / "corpus.txt"
    path.write_text("one\n", encoding="utf-8")
    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(files.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    first = files.file_sha256(path)
    assert files.file_sha256(path) == first and len(calls) == 1  # the cache key and the run record share it
    stat = path.stat()
    path.write_text("two\n", encoding="utf-8")  # same size, and the modification time set back
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert files.file_sha256(path) == real(b"two\n").hexdigest() != first and len(calls) == 2
