"""``lmforge pii-scan``: counts equal to a plain count, examples that never show a value, exit codes to gate on."""

from __future__ import annotations

import csv
import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from lmforge.cli.main import main
from lmforge.plugins.privacy.pii import PiiDetector, resolve_overlaps

GENERATOR = Path(__file__).resolve().parents[2] / "scripts" / "make_pii_data.py"


@pytest.fixture(scope="module")
def documents() -> list[dict]:
    spec = importlib.util.spec_from_file_location("make_pii_data", GENERATOR)
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    return generator.make_documents(80, seed=21)


@pytest.fixture
def jsonl(tmp_path: Path, documents: list[dict]) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"body": d["text"], "id": i}) + "\n" for i, d in enumerate(documents)))
    return path


def test_counts_examples_and_exit_code(jsonl: Path, documents: list[dict], tmp_path: Path, capsys) -> None:
    report = tmp_path / "report.json"
    code = main(["pii-scan", str(jsonl), "--text-column", "body", "--examples", "2", "--json", str(report)])
    out, err = capsys.readouterr()
    assert code == 1 and "found EMAIL" in err
    detector = PiiDetector()
    spans = [resolve_overlaps(s) for s in detector.detect([d["text"] for d in documents])]
    counts = Counter(s.entity for doc in spans for s in doc)
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()  # the table, not the indented examples
            if line[:1].strip() and line.split()[0] in counts}
    assert {t: int(r[0]) for t, r in rows.items()} == dict(counts)
    assert f"scanned {len(documents)} documents in 1 file(s); {sum(map(bool, spans))} hold personal data" in out
    assert json.loads(report.read_text())["counts"] == dict(counts)
    # Examples show where values were, never the values.
    examples = [line for line in out.splitlines() if ", document " in line]
    assert len(examples) == 2 * len(counts)
    values = [d["text"][a:b] for d in documents for a, b, t in d["spans"] if t != "PERSON"]
    assert not [v for v in values if v in out]
    assert all("<" in line for line in examples)


def test_fail_on_some_types_or_none(jsonl: Path, tmp_path: Path, capsys) -> None:
    assert main(["pii-scan", str(jsonl), "--text-column", "body", "--fail-on", "none"]) == 0
    clean = tmp_path / "clean.csv"
    with open(clean, "w", newline="") as f:
        csv.writer(f).writerows([["text"], ["The train left at 10:24 with 300 kg of cargo."], ["Version 1.2.3."]])
    assert main(["pii-scan", str(clean)]) == 0
    only_cards = tmp_path / "cards.txt"
    only_cards.write_text("Paid with 4111 1111 1111 1111.\nNothing here.\n")
    assert main(["pii-scan", str(only_cards), "--fail-on", "EMAIL,IBAN"]) == 0
    assert main(["pii-scan", str(only_cards), "--fail-on", "credit_card"]) == 1
    capsys.readouterr()


@pytest.mark.parametrize(("args", "message"), [
    (["missing.txt"], "file not found: missing.txt"),
    (["{file}", "--fail-on", "SSN"], "--fail-on must be 'any', 'none' or entity types"),
    (["{file}", "--fail-on", "PERSON"], "--fail-on names PERSON, which this scan does not look for"),
    (["{file}", "--text-column", "body2"], "has no column 'body2'"),
])
def test_usage_errors_exit_2(jsonl: Path, args: list[str], message: str, capsys) -> None:
    assert main(["pii-scan", *[a.replace("{file}", str(jsonl)) for a in args]]) == 2
    assert message in capsys.readouterr().err
