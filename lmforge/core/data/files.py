"""Finding and reading data files, with errors that name the file and the key.

``datasets.load_dataset`` does the reading; when it fails, the file at fault
is found and described (missing, empty, undecodable bytes at an offset,
malformed JSON on a line, a missing column) instead of a deep stack trace.

``datasets`` keys its cache of a local file by path and modification time, so
a file edited and given back its old mtime (``cp -p``, ``rsync -t``, ``tar x``)
would be read from a stale cache. lmforge therefore keeps each set of files'
cache under the sha256 of their content (`content_key`).
"""

from __future__ import annotations

import codecs
import csv
import glob
import hashlib
import json
import logging
import os
from importlib import resources
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from lmforge.core.data import rows

if TYPE_CHECKING:
    import datasets

log = logging.getLogger(__name__)

BUNDLED_PREFIX = "lmforge:"
BUILDERS = {".txt": "text", ".text": "text", ".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def default_cache_dir() -> Path:
    """lmforge's cache (tokenized datasets, tokenizers, the plugin listing): ``$LMFORGE_CACHE`` or ~/.cache/lmforge."""
    return Path(os.environ.get("LMFORGE_CACHE", Path.home() / ".cache" / "lmforge"))


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


def diagnose(path: Path, text_column: str, column_keys: dict[str, str] | None = None,
             can_skip: bool = True) -> str | None:
    """Why ``path`` cannot be read as text data, or None if no problem is found.

    Args:
        column_keys: Required columns and the recipe key that names each;
            default ``{text_column: "data.text_column"}``.
        can_skip: The reader accepts ``data.skip_bad_lines`` (TextData does, LabeledTextData does not:
            a skipped labeled row would silently change the label counts).
    """
    column_keys = column_keys or {text_column: "data.text_column"}
    builder = BUILDERS[path.suffix.lower()]
    if builder == "parquet":
        return None
    problem = utf8_problem(path)
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
                    fix = ", or set data.skip_bad_lines: true to skip such lines" if can_skip else ""
                    return f"{path}, line {number}: malformed JSON ({exc.msg}). Fix the line{fix}."
                for column, key in column_keys.items():
                    if not isinstance(row, dict) or column not in row:
                        return f"{path}, line {number}: no {column!r} field ({key})."
    return None


def utf8_problem(path: Path) -> str | None:
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


def read_rows(files: list[Path], column_keys: dict[str, str], key: str, cache_dir: str,
              csv_as_text: bool = False) -> datasets.Dataset:
    """Read ``jsonl``/``csv``/``parquet`` ``files`` into a dataset that has every column of ``column_keys``.

    Args:
        column_keys: Required columns and the recipe key that names each
            (``{"label": "data.label_column"}``), for the error messages.
        key: The recipe key that points at ``files``.
        csv_as_text: Read every ``csv`` column as text, as written (``007`` stays ``007``, ``3.50`` stays
            ``3.50``), instead of inferring numbers.
    """
    import datasets

    builder = BUILDERS[files[0].suffix.lower()]
    if builder == "text":
        raise DataFileError(
            f"{key}: {files[0].name} is plain text; labeled data needs columns, use jsonl, csv or parquet files."
        )
    options = {}
    if builder == "csv" and csv_as_text:
        with files[0].open(encoding="utf-8", newline="") as f:
            header = next(csv.reader(f), [])
        options["features"] = datasets.Features({name: datasets.Value("string") for name in header})
    try:
        ds = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train",
                                   cache_dir=str(Path(cache_dir) / content_key(files)), **options)
    except Exception as exc:  # datasets wraps reader errors in its own types; find the file at fault
        for path in files:
            problem = diagnose(path, next(iter(column_keys)), column_keys, can_skip=False)
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


def reader_options(builder: str, text_column: str = "text") -> dict[str, object]:
    """How ``datasets`` must read a format for the text to arrive unaltered (see `lmforge.core.data.rows`)."""
    if builder == "text":
        return {"encoding": "utf-8-sig"}  # a BOM at the start of a file is the encoding's mark, not text
    if builder == "csv":  # "NA", "null": text, not missing values; "007" stays "007", not the number 7
        return {"keep_default_na": False, "na_filter": False, "converters": {text_column: str}}
    return {}


def documents_dataset(files: list[Path], text_column: str, key: str, cache_dir: str,
                      skip_bad_lines: bool = False) -> datasets.Dataset:
    """Read ``files`` into a dataset with one non-empty document per row in a ``text`` column.

    Each file is scanned first (`lmforge.core.data.rows`): rows that cannot be documents are refused with their
    numbers, or with ``skip_bad_lines`` left out with a warning per file. The cache lives under
    ``cache_dir/<content_key(files)>``; a damaged cache entry is removed and built again, with a warning.
    """
    import datasets

    builder = BUILDERS[files[0].suffix.lower()]
    before_reading = {f: file_identity(f) for f in files}  # before hashing: a change from now on is seen
    hashes = {f: file_sha256(f) for f in files}
    cache = Path(cache_dir) / content_key(files)
    checked = Path(cache_dir) / "checked"
    try:
        scans = [rows.scan_file(f, hashes[f], builder, text_column, checked) for f in files]
    except UnicodeDecodeError:
        problem = next(filter(None, (utf8_problem(f) for f in files)), None)
        raise DataFileError(f"{key}: {problem}") from None
    problems = [s.problem for s in scans if s.problem]
    if problems:
        raise DataFileError(f"{key}: {problems[0]}")
    bad = [s for s in scans if s.bad]
    if bad and not skip_bad_lines:
        raise DataFileError(rows.refusal(key, bad))
    arrays = [str(s.path) for s in bad if s.unit == "record"]
    if arrays:
        raise DataFileError(f"{key}: {arrays} hold a JSON array with records that cannot be documents "
                            f"({rows.refusal(key, bad).split(': ', 1)[1].split('. Fix', 1)[0]}); data.skip_bad_lines "
                            "skips lines of JSON-lines files only. Fix those records.")
    for scan in bad:
        rows.log_skipped(key, scan)
    read = files
    if bad and builder in ("text", "json"):
        read = [rows.without_bad_lines(s, hashes[s.path], cache / "cleaned") if s.bad else s.path for s in scans]
    counts: list[int] = []

    def build() -> datasets.Dataset:
        ds = datasets.load_dataset(builder, data_files=[str(f) for f in read], split="train", cache_dir=str(cache),
                                   **reader_options(builder, text_column))
        if bad and builder in ("csv", "parquet"):
            ds = _without_rows(ds, scans, key)
        if builder != "text":
            ds = _select_text_column(ds, text_column, key, files)
        counts[:] = [len(ds)]
        return ds.filter(_non_empty, batched=True, desc="Dropping empty documents")

    try:
        ds = _repairing_cache(build, files, cache, key)
        before = counts[0]
    except DataFileError:
        raise
    except Exception as exc:  # datasets and pyarrow wrap reader errors in their own types; find the file at fault
        for path in files:
            problem = diagnose(path, text_column)
            if problem:
                raise DataFileError(f"{key}: {problem}") from None
        raise DataFileError(f"{key}: could not read {[str(f) for f in files]}: {exc}") from exc
    changed = [str(f) for f, identity in before_reading.items() if file_identity(f) != identity]
    if changed:
        remove_cache_entry(cache)
        for digest in hashes.values():
            for entry in checked.glob(f"{digest}-*"):
                entry.unlink(missing_ok=True)
        raise DataFileError(f"{key}: {changed} changed while lmforge read them (their size or change time moved), so "
                            "what was read may mix old and new content; it was not kept in the cache. Run again once "
                            "nothing writes to them.")
    if builder != "text" and before > len(ds):
        log.info("%s: left out %d of %d rows of %s whose text is empty or only whitespace.", key, before - len(ds),
                 before, [str(f) for f in files])
    if len(ds) == 0:
        raise DataFileError(f"{key}: {[str(f) for f in files]} hold no non-empty documents.")
    return ds


def _repairing_cache(build: Callable[[], datasets.Dataset], files: list[Path], cache: Path,
                     key: str) -> datasets.Dataset:
    """``build()``; when it fails while the files themselves are sound, the cache entry is damaged (a truncated
    Arrow file, a partial write): it is removed, said so, and built once more."""
    try:
        return build()
    except DataFileError:
        raise
    except Exception as exc:
        if not cache.is_dir() or any(diagnose(path, "") for path in files if BUILDERS[path.suffix.lower()] != "json"):
            raise
        log.warning("%s: the dataset cache %s is damaged (%s); removing it and reading %s again.", key, cache,
                    damage_reason(exc), [str(f) for f in files])
        remove_cache_entry(cache)
        return build()


def map_repairing_cache(ds: datasets.Dataset, function: object, key: str, new_fingerprint: str,
                        **kwargs: object) -> datasets.Dataset:
    """``ds.map(function, new_fingerprint=...)``; when the map's cached result (``cache-<fingerprint>.arrow``) is
    damaged, it is removed, said so, and computed again."""
    try:
        return ds.map(function, new_fingerprint=new_fingerprint, **kwargs)
    except Exception as exc:
        files = [Path(f["filename"]) for f in ds.cache_files]
        target = files[0].parent / f"cache-{new_fingerprint}.arrow" if files else None
        if target is None or not target.is_file():
            raise
        log.warning("%s: the cached %s %s is damaged (%s); removing it and computing it again.", key,
                    kwargs.get("desc", "map"), target, damage_reason(exc))
        target.unlink()
        return ds.map(function, new_fingerprint=new_fingerprint, **kwargs)


def damage_reason(exc: BaseException) -> str:
    """What a warning about a damaged cache entry says of the error that showed it: the first line of its
    message, or its type when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def remove_cache_entry(path: Path) -> None:
    """Remove a cache directory: first renamed aside (atomic), so that no reader finds it half removed."""
    import shutil

    aside = path.with_name(f".{path.name}.{os.getpid()}.removed")
    try:
        os.rename(path, aside)
    except OSError:
        aside = path
    shutil.rmtree(aside, ignore_errors=True)


def _without_rows(ds: datasets.Dataset, scans: list[rows.FileScan], key: str) -> datasets.Dataset:
    """``ds`` (the rows of the scanned files, in order) without the scans' bad rows."""
    if len(ds) != sum(s.rows for s in scans):
        raise DataFileError(f"{key}: read {len(ds)} rows of {[str(s.path) for s in scans]}, but scanned "
                            f"{sum(s.rows for s in scans)}; cannot tell which rows to skip. Fix the bad rows instead.")
    drop, offset = set(), 0
    for scan in scans:
        drop.update(offset + n - 1 for n, _ in scan.bad)
        offset += scan.rows
    return ds.select([i for i in range(len(ds)) if i not in drop])


_DIGESTS: dict[tuple[str, int, int, int], str] = {}  # (path, inode, size, ctime) -> sha256


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file's bytes (read in 1 MiB chunks; see benchmarks/content_hash.py for its cost).

    Remembered for the process, keyed by the file's identity, size and change time: a run needs the digest
    for its cache key and again for its run record, and a large corpus costs ~2 s/GB to hash. The change
    time (ctime) moves on every write and cannot be set back, unlike the modification time (``cp -p``,
    ``touch -d``), so an edit is never missed.
    """
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_ino, stat.st_size, stat.st_ctime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(chunk):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def file_identity(path: Path) -> tuple[int, int, int, int]:
    """What changes whenever a file's content may have: inode, size, modification and change time."""
    stat = os.stat(path)
    return stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


def content_key(files: list[Path]) -> str:
    """A key for the content of ``files``, in order: editing any byte of any of them changes it."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()[:16]


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
