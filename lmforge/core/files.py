"""Finding and reading data files, with errors that name the file and the key.

``datasets.load_dataset`` does the reading; when it fails, the file at fault
is found and described (missing, empty, undecodable bytes at an offset,
malformed JSON on a line, a missing column) instead of a deep stack trace.
"""

from __future__ import annotations

import codecs
import glob
import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import datasets

BUNDLED_PREFIX = "lmforge:"
BUILDERS = {".txt": "text", ".text": "text", ".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


class DataFileError(ValueError):
    """A data file that cannot be used, named with the recipe key that points at it."""


def bundled_data_dir() -> Path:
    return Path(str(resources.files("lmforge") / "data"))


def _expand(pattern: str) -> list[Path]:
    if pattern.startswith(BUNDLED_PREFIX):
        pattern = str(bundled_data_dir() / pattern[len(BUNDLED_PREFIX):])
    pattern = str(Path(pattern).expanduser())
    if glob.has_magic(pattern):
        return [Path(p) for p in sorted(glob.glob(pattern, recursive=True))]
    return [Path(pattern)]


def resolve_files(patterns: list[str], key: str) -> list[Path]:
    """Expand globs and check every file exists, is non-empty and has a known format."""
    if not patterns:
        raise DataFileError(f"{key}: no files given.")
    files: list[Path] = []
    for pattern in patterns:
        matched = _expand(pattern)
        if glob.has_magic(pattern) and not matched:
            raise DataFileError(f"{key}: the pattern {pattern!r} matches no files.")
        for path in matched:
            if not path.is_file():
                raise DataFileError(f"{key}: file not found: {path}. Check the path (relative paths start at {Path.cwd()}).")
            if path.stat().st_size == 0:
                raise DataFileError(f"{key}: {path} is empty.")
            if path.suffix.lower() not in BUILDERS:
                raise DataFileError(
                    f"{key}: {path} has an unsupported extension {path.suffix!r}; use one of {sorted(BUILDERS)}."
                )
            files.append(path)
    examples = {BUILDERS[p.suffix.lower()]: p for p in files}
    if len(examples) > 1:
        named = ", ".join(f"{b} ({examples[b]})" for b in sorted(examples))
        raise DataFileError(f"{key}: mixes file formats ({', '.join(sorted(examples))}): {named}; "
                            "give files of one format.")
    return files


def diagnose(path: Path, text_column: str, column_keys: dict[str, str] | None = None) -> str | None:
    """Why ``path`` cannot be read as text data, or None if no problem is found.

    Args:
        column_keys: Required columns and the recipe key that names each;
            default ``{text_column: "data.text_column"}``.
    """
    column_keys = column_keys or {text_column: "data.text_column"}
    builder = BUILDERS[path.suffix.lower()]
    if builder == "parquet":
        return None
    problem = _utf8_problem(path)
    if problem:
        return problem
    if builder == "json":
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    return f"{path}, line {number}: malformed JSON ({exc.msg})."
                for column, key in column_keys.items():
                    if not isinstance(row, dict) or column not in row:
                        return f"{path}, line {number}: no {column!r} field ({key})."
    return None


def _utf8_problem(path: Path) -> str | None:
    """The first invalid UTF-8 byte sequence in ``path``, with its byte offset."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # bytes of the file before the current chunk
    with path.open("rb") as f:
        while True:
            chunk = f.read(1 << 20)
            pending = len(decoder.getstate()[0])  # bytes of a character held back from the last chunk
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                return (f"{path}: bytes at offset {offset - pending + exc.start} are not valid UTF-8 "
                        f"({exc.reason}). Re-encode the file as UTF-8.")
            if not chunk:
                return None
            offset += len(chunk)


def read_rows(files: list[Path], column_keys: dict[str, str], key: str, cache_dir: str) -> datasets.Dataset:
    """Read ``jsonl``/``csv``/``parquet`` ``files`` into a dataset that has every column of ``column_keys``.

    Args:
        column_keys: Required columns and the recipe key that names each
            (``{"label": "data.label_column"}``), for the error messages.
        key: The recipe key that points at ``files``.
    """
    import datasets

    builder = BUILDERS[files[0].suffix.lower()]
    if builder == "text":
        raise DataFileError(
            f"{key}: {files[0].name} is plain text; labeled data needs columns, use jsonl, csv or parquet files."
        )
    try:
        ds = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train", cache_dir=cache_dir)
    except Exception as exc:  # datasets wraps reader errors in its own types; find the file at fault
        for path in files:
            problem = diagnose(path, next(iter(column_keys)), column_keys)
            if problem:
                raise DataFileError(f"{key}: {problem}") from None
        raise DataFileError(f"{key}: could not read {[str(f) for f in files]}: {exc}") from exc
    for column, column_key in column_keys.items():
        if column not in ds.column_names:
            raise DataFileError(
                f"{key}: {files[0].name} has no column {column!r} ({column_key}); its columns are {ds.column_names}."
            )
    if len(ds) == 0:
        raise DataFileError(f"{key}: {[str(f) for f in files]} hold no rows.")
    return ds


def documents_dataset(files: list[Path], text_column: str, key: str, cache_dir: str) -> datasets.Dataset:
    """Read ``files`` into a dataset with one non-empty document per row in a ``text`` column."""
    import datasets

    builder = BUILDERS[files[0].suffix.lower()]
    try:
        ds = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train", cache_dir=cache_dir)
        if builder != "text":
            ds = _select_text_column(ds, text_column, key, files)
        ds = ds.filter(_non_empty, batched=True, desc="Dropping empty documents")
    except DataFileError:
        raise
    except Exception as exc:  # datasets and pyarrow wrap reader errors in their own types; find the file at fault
        for path in files:
            problem = diagnose(path, text_column)
            if problem:
                raise DataFileError(f"{key}: {problem}") from None
        raise DataFileError(f"{key}: could not read {[str(f) for f in files]}: {exc}") from exc
    if len(ds) == 0:
        raise DataFileError(f"{key}: {[str(f) for f in files]} hold no non-empty documents.")
    return ds


def _select_text_column(ds: datasets.Dataset, text_column: str, key: str, files: list[Path]) -> datasets.Dataset:
    """Rename ``text_column`` to ``text``; a different column already named ``text`` gives way to it."""
    if text_column not in ds.column_names:
        raise DataFileError(
            f"{key}: {files[0].name} has no column {text_column!r} (data.text_column); "
            f"its columns are {ds.column_names}."
        )
    if text_column == "text":
        return ds
    if "text" in ds.column_names:
        ds = ds.remove_columns("text")
    return ds.rename_column(text_column, "text")


def _non_empty(examples: dict[str, list]) -> list[bool]:
    return [isinstance(t, str) and bool(t.strip()) for t in examples["text"]]
