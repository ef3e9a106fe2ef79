"""Rows that cannot be documents: found before reading, named by file and row, refused or skipped and counted.

`TextData` reads one document per line of a ``txt`` file and per row of a ``jsonl``, ``csv`` or ``parquet``
file. A row is *bad* when it cannot be a document without changing it:

- ``jsonl``: the line is not a JSON object (malformed, or JSON of another kind); the object has no text
  field; the field is null, a number, a boolean, a list or an object;
- ``parquet``: the text is null;
- any format: the text holds a NUL character (U+0000), which no text means to hold (a binary file, a
  broken export); kept, it would become a token that no tokenizer was meant to see.

A bad row stops the run with its file and row numbers; ``data.skip_bad_lines: true`` skips bad rows instead,
with a warning per file that counts them. A ``parquet`` column that is not text at all (numbers) is refused
whatever the setting. Rows with empty text (or only whitespace) are not bad: they carry nothing and are left
out (for ``jsonl``, ``csv`` and ``parquet`` the log counts them; a ``txt`` file's blank lines separate
documents). A UTF-8 byte order mark at the start of a file is read as the encoding mark it is, never as text.
``csv`` cells are read as the text they are: ``NA``, ``null`` or ``007`` stay those strings, and an empty
cell is an empty document.

`scan_file` finds a file's bad rows once per content; the result is cached under ``<cache>/checked`` by the
file's sha256, so a large corpus is scanned once.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

#: Bad rows named in an error (the rest are counted).
SHOWN = 10


@dataclass
class FileScan:
    """What `scan_file` found in one file.

    Attributes:
        rows: Rows read (``txt``: lines; ``jsonl``: non-blank lines; ``csv``/``parquet``: data rows).
        bad: ``(row number, problem)`` of each bad row, 1-based (``txt``/``jsonl``: the line number).
        problem: A problem of the whole file (a column that is not text), or None.
    """

    path: Path
    unit: str
    rows: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)
    problem: str | None = None


def scan_file(path: Path, digest: str, builder: str, text_column: str, cache: Path) -> FileScan:
    """The bad rows of ``path`` (whose sha256 is ``digest``; see the module docstring), cached under ``cache``."""
    entry = cache / f"{digest}-{builder}-{_safe(text_column)}.json"
    try:
        saved = json.loads(entry.read_text(encoding="utf-8"))
        return FileScan(path, saved["unit"], saved["rows"], [tuple(b) for b in saved["bad"]], saved["problem"])
    except FileNotFoundError:
        pass
    except (ValueError, KeyError, TypeError):  # a damaged cache entry: scan again
        log.warning("The cached scan %s is damaged; scanning %s again.", entry, path)
    scan = {"text": _scan_txt, "json": _scan_jsonl, "csv": _scan_csv, "parquet": _scan_parquet}[builder](
        path, text_column)
    atomic_write_text(entry, json.dumps({"unit": scan.unit, "rows": scan.rows, "bad": scan.bad,
                                         "problem": scan.problem}))
    return scan


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]


def _scan_txt(path: Path, text_column: str) -> FileScan:
    scan = FileScan(path, "line")
    has_nul = False
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            has_nul = has_nul or b"\0" in chunk
            scan.rows += chunk.count(b"\n")
    if not has_nul:
        return scan
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if b"\0" in line:
                scan.bad.append((number, "holds a NUL character (U+0000)"))
    return scan


def _is_array(path: Path) -> bool:
    with path.open(encoding="utf-8-sig") as f:
        return f.read(4096).lstrip().startswith("[")


def _json_records(path: Path) -> Iterator[tuple[int, object]]:
    """The records of a JSON-lines file by line number (a `json.JSONDecodeError` for a malformed line); of a
    ``.json`` file holding one array, by position."""
    with path.open(encoding="utf-8-sig") as f:  # a BOM at the start is the encoding's mark, not JSON
        head = f.read(4096).lstrip()
        f.seek(0)
        if head.startswith("["):
            try:
                records = json.load(f)
            except json.JSONDecodeError as exc:
                yield 1, exc
                return
            yield from enumerate(records, start=1)
            return
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, exc


def _scan_jsonl(path: Path, text_column: str) -> FileScan:
    scan = FileScan(path, "record" if _is_array(path) else "line")
    columns: dict[str, None] = {}
    missing = 0
    for number, row in _json_records(path):
        scan.rows += 1
        if isinstance(row, json.JSONDecodeError):
            scan.bad.append((number, f"malformed JSON ({row.msg})"))
            continue
        if not isinstance(row, dict):
            scan.bad.append((number, f"not a JSON object (a JSON {_json_kind(row)})"))
            continue
        columns.update(dict.fromkeys(row))
        if text_column not in row:
            missing += 1
            scan.bad.append((number, f"no {text_column!r} field"))
            continue
        value = row[text_column]
        if not isinstance(value, str):
            scan.bad.append((number, f"{text_column!r} is {_json_value(value)}, not text"))
        elif "\0" in value:
            scan.bad.append((number, f"{text_column!r} holds a NUL character (U+0000)"))
    if scan.rows and missing == scan.rows:  # no row has the column: the column is wrong, not the rows
        scan.problem = (f"{path.name} has no column {text_column!r} (data.text_column); its columns are "
                        f"{sorted(columns)}.")
        scan.bad = []
    return scan


def _json_kind(value: object) -> str:
    return {list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def _json_value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({json.dumps(value)})"
    if isinstance(value, (int, float)):
        return f"a number ({json.dumps(value)})"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _scan_csv(path: Path, text_column: str) -> FileScan:
    import pandas as pd

    scan = FileScan(path, "row")
    try:
        column = pd.read_csv(path, usecols=[text_column], dtype=str, keep_default_na=False, na_filter=False,
                             encoding="utf-8-sig")[text_column]
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError):  # no such column, or unreadable: the reader says
        return scan
    scan.rows = len(column)
    scan.bad = [(i + 1, f"{text_column!r} holds a NUL character (U+0000)")
                for i in column.index[column.str.contains("\0", regex=False)].tolist()]
    return scan


def _scan_parquet(path: Path, text_column: str) -> FileScan:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    scan = FileScan(path, "row")
    schema = pq.read_schema(path)
    if text_column not in schema.names:
        return scan  # the reader names the missing column
    column = pq.read_table(path, columns=[text_column]).column(text_column)
    scan.rows = len(column)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        scan.problem = (f"{path.name}: column {text_column!r} (data.text_column) holds {column.type} values, not text. "
                        "Point data.text_column at the text column.")
        return scan
    nulls = pc.is_null(column)
    nul_chars = pc.fill_null(pc.match_substring(column, "\0"), False)
    for i, (null, nul) in enumerate(zip(nulls.to_pylist(), nul_chars.to_pylist())):
        if null:
            scan.bad.append((i + 1, f"{text_column!r} is null"))
        elif nul:
            scan.bad.append((i + 1, f"{text_column!r} holds a NUL character (U+0000)"))
    return scan


def refusal(key: str, scans: list[FileScan]) -> str:
    """The error for files with bad rows and ``data.skip_bad_lines`` off."""
    parts = []
    for scan in scans:
        if len(scan.bad) == 1:
            number, problem = scan.bad[0]
            parts.append(f"{scan.path}, {scan.unit} {number}: {problem}")
            continue
        shown = "; ".join(f"{scan.unit} {n}: {p}" for n, p in scan.bad[:SHOWN])
        more = f"; and {len(scan.bad) - SHOWN} more" if len(scan.bad) > SHOWN else ""
        parts.append(f"{scan.path}: {len(scan.bad)} of {scan.rows} {scan.unit}s cannot be documents ({shown}{more})")
    unit = scans[0].unit
    return (f"{key}: " + "\n  ".join(parts) + f". Fix the {unit}" + ("s" if len(parts) > 1 or len(scans[0].bad) > 1
                                                                       else "")
            + f", or set data.skip_bad_lines: true to skip such {unit}s (counted per file in the log).")


def log_skipped(key: str, scan: FileScan) -> None:
    numbers = ", ".join(str(n) for n, _ in scan.bad[:SHOWN]) + (", ..." if len(scan.bad) > SHOWN else "")
    kinds = sorted({p for _, p in scan.bad})
    log.warning("%s: skipped %d %s(s) of %s that cannot be documents (%ss %s: %s); data.skip_bad_lines is on.",
                key, len(scan.bad), scan.unit, scan.path, scan.unit, numbers, "; ".join(kinds[:4]))


def without_bad_lines(scan: FileScan, digest: str, directory: Path) -> Path:
    """A copy of the ``txt``/``jsonl`` file of ``scan`` (sha256 ``digest``) without its bad lines, written once per
    content under ``directory`` (atomically: a concurrent or killed run never leaves a partial copy that a later
    run trusts)."""
    clean = directory / f"{digest}{scan.path.suffix.lower()}"
    if clean.is_file():
        return clean
    bad = {n for n, _ in scan.bad}
    directory.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{clean.name}.", suffix=".partial")
    try:
        with path_open(scan.path) as src, os.fdopen(fd, "wb") as out:
            for number, line in enumerate(src, start=1):
                if number not in bad:
                    out.write(line if line.endswith(b"\n") else line + b"\n")
        os.replace(temporary, clean)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return clean


def path_open(path: Path) -> BinaryIO:
    """``path`` opened for reading bytes, past its UTF-8 byte order mark if it has one."""
    f = path.open("rb")
    if f.read(3) != b"\xef\xbb\xbf":
        f.seek(0)
    return f


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``path`` through a temporary file beside it and a rename, so that no reader sees it half written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
