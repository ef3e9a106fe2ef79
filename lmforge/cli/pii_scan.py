"""``lmforge pii-scan FILES...``: audit a corpus for personal data without training.

Reads the files as `TextData` does (``txt``: a document per non-empty line; ``jsonl``/``csv``/``parquet``: a
document per row, from ``--text-column``), detects personal data with the detector of `PIIRedaction`
(`lmforge.plugins.privacy.pii`), and prints the count per entity type with a few examples, redacted: an
example shows where a value was found, never the value.

Exit codes, for a CI pipeline to gate on: 0 when no entity of the ``--fail-on`` types was found, 1 when
some was, 2 for a usage error (a missing or unreadable file, an unknown type).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from lmforge.core.data.base import datasets_progress_bars
from lmforge.core.data.files import default_cache_dir, documents_dataset, resolve_files
from lmforge.plugins.privacy.pii import ENTITY_TYPES, PiiDetector, PiiSpan, redact, resolve_overlaps

CLEAN, FOUND, USAGE = 0, 1, 2
#: Characters of context shown on each side of an example's redacted value.
CONTEXT = 40


@dataclass
class Example:
    """Where one detection was, with the text around it redacted."""

    entity: str
    file: str
    document: int  # 1-based, among the file's non-empty documents
    snippet: str


@dataclass
class ScanReport:
    """What `scan` found."""

    files: list[str] = field(default_factory=list)
    documents: int = 0
    documents_with_pii: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    documents_by_type: Counter[str] = field(default_factory=Counter)
    examples: list[Example] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"files": self.files, "documents": self.documents, "documents_with_pii": self.documents_with_pii,
                "counts": dict(self.counts), "documents_by_type": dict(self.documents_by_type),
                "examples": [vars(e) for e in self.examples]}


def scan(patterns: list[str], detector: PiiDetector, text_column: str = "text", examples_per_type: int = 3,
         batch_size: int = 256) -> ScanReport:
    """Detect personal data in the documents of ``patterns`` (files or globs, as `TextData` takes them)."""
    report = ScanReport()
    with datasets_progress_bars(enabled=False):  # reading a file is quick; the report is what the user reads
        for path in resolve_files(patterns, "FILES"):
            report.files.append(str(path))
            docs = documents_dataset([path], text_column, "FILES", str(default_cache_dir() / "datasets"))
            for start in range(0, len(docs), batch_size):
                texts = docs[start:start + batch_size]["text"]
                for offset, (text, spans) in enumerate(zip(texts, detector.detect(texts))):
                    spans = resolve_overlaps(spans)
                    report.documents += 1
                    if not spans:
                        continue
                    report.documents_with_pii += 1
                    report.counts.update(s.entity for s in spans)
                    report.documents_by_type.update({s.entity for s in spans})
                    for span in spans:
                        if sum(e.entity == span.entity for e in report.examples) < examples_per_type:
                            report.examples.append(Example(span.entity, str(path), start + offset + 1,
                                                           snippet(text, spans, span)))
    report.examples.sort(key=lambda e: ENTITY_TYPES.index(e.entity))
    return report


def snippet(text: str, spans: list[PiiSpan], around: PiiSpan) -> str:
    """``text`` near the span ``around``, with every detection in it replaced by its placeholder."""
    lo, hi = max(0, around.start - CONTEXT), min(len(text), around.end + CONTEXT)
    while 0 < lo < around.start and not text[lo - 1].isspace():  # whole words
        lo -= 1
    while around.end < hi < len(text) and not text[hi].isspace():
        hi += 1
    # Widen to whole detections, so that no value is cut in half and shown in part.
    for span in spans:
        if span.start < lo < span.end:
            lo = span.start
        if span.start < hi < span.end:
            hi = span.end
    inside = [replace(s, start=s.start - lo, end=s.end - lo) for s in spans if lo <= s.start and s.end <= hi]
    shown = redact(text[lo:hi], inside, "placeholder") or ""
    return ("..." if lo > 0 else "") + " ".join(shown.split()) + ("..." if hi < len(text) else "")


def parse_fail_on(value: str, checked: tuple[str, ...]) -> set[str]:
    """``--fail-on``: ``any`` (every type ``checked``), ``none`` or comma-separated entity types, all ``checked``."""
    if value == "any":
        return set(checked)
    if value == "none":
        return set()
    types = {t.strip().upper() for t in value.split(",") if t.strip()}
    unknown = sorted(types - set(ENTITY_TYPES))
    if unknown or not types:
        raise ValueError(f"--fail-on must be 'any', 'none' or entity types among {', '.join(ENTITY_TYPES)}, got "
                         f"{value!r}.")
    unchecked = sorted(types - set(checked))
    if unchecked:
        raise ValueError(f"--fail-on names {', '.join(unchecked)}, which this scan does not look for"
                         + (" (PERSON needs --spacy-model)" if "PERSON" in unchecked else "") + "; add it to "
                         "--entities or leave it out of --fail-on.")
    return types


def format_report(report: ScanReport, entities: tuple[str, ...]) -> str:
    lines = [f"scanned {report.documents} documents in {len(report.files)} file(s); "
             f"{report.documents_with_pii} hold personal data", "",
             f"{'type':<16}{'found':>8}{'documents':>11}"]
    lines += [f"{t:<16}{report.counts[t]:>8}{report.documents_by_type[t]:>11}" for t in entities]
    if "PERSON" not in entities:
        lines.append(f"{'PERSON':<16}{'-':>8}{'-':>11}   not checked: needs --spacy-model (docs/privacy.md)")
    if report.examples:
        lines += ["", "examples (redacted):"]
        lines += [f"  {e.entity:<16}{e.file}, document {e.document}: {e.snippet}" for e in report.examples]
    return "\n".join(lines)


def failing(report: ScanReport, fail_on: set[str]) -> list[str]:
    """The ``--fail-on`` types found, in report order."""
    return [t for t in ENTITY_TYPES if t in fail_on and report.counts[t]]


def write_json(report: ScanReport, path: str) -> None:
    Path(path).write_text(json.dumps(report.as_dict(), indent=2), encoding="utf-8")
