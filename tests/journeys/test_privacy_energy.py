"""Privacy and energy, as users meet them:

    python scripts/make_pii_data.py --out corpus.jsonl ...          (synthetic personal data, from faker)
    lmforge pii-scan corpus.jsonl                                    (counts, redacted examples, exit 1: found)
    lmforge fit --config quickstart --config overlays/privacy ...    (canaries, redaction, the memorization probe)
    lmforge memorization runs/quickstart/version_0/checkpoints/last.ckpt
    lmforge fit --config quickstart --config overlays/energy ...     (energy and CO2 with the metrics, the summary)
    lmforge plot runs/quickstart/version_0                           (energy.png, val_loss_by_energy.png)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from journey_kit import QUICK_LIMIT, Journeys, metric_values, read_metrics, short_args

GENERATOR = Path(__file__).resolve().parents[2] / "scripts" / "make_pii_data.py"
#: overlays/privacy's canaries: 4 of them, inserted 0, 1, 4 and 16 times, phone numbers that PIIRedaction finds.
CANARY_COPIES = 0 + 1 + 4 + 16


@pytest.fixture(scope="module")
def pii_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """A jsonl corpus of generated documents with synthetic personal data, and its gold spans."""
    path = tmp_path_factory.mktemp("pii-scan") / "corpus.jsonl"
    subprocess.run([sys.executable, str(GENERATOR), "--out", str(path), "--documents", "60", "--seed", "3"],
                   check=True, capture_output=True)
    return path, [json.loads(line) for line in path.read_text().splitlines()]


def test_pii_scan_counts_shows_no_value_and_gates_ci(journeys: Journeys, pii_corpus) -> None:
    path, documents = pii_corpus
    found = journeys.lmforge(["pii-scan", path.name], path.parent, limit=QUICK_LIMIT)
    assert found.returncode == 1, found.explain("pii-scan must exit 1 when it finds personal data")
    table = {line.split()[0]: line.split()[1:] for line in found.stdout.splitlines() if line[:1].strip()}
    validated = ("EMAIL", "CREDIT_CARD", "IBAN", "IP_ADDRESS", "URL_CREDENTIALS")  # checksum or grammar: all found
    for entity in validated:
        gold = sum(t == entity for d in documents for _, _, t in d["spans"])
        assert int(table[entity][0]) == gold, found.explain(f"{entity}: {gold} in the generated file")
    assert table["PERSON"][0] == "-" and "needs --spacy-model" in found.stdout
    # Every value of these types was found, so none may show in an example (a missed phone number can, as context).
    values = [d["text"][a:b] for d in documents for a, b, t in d["spans"] if t in validated]
    assert not [v for v in values if v in found.output], "an example shows a value it found"
    assert "<EMAIL>" in found.stdout and "found EMAIL" in found.stderr

    assert journeys.lmforge(["pii-scan", path.name, "--fail-on", "none"], path.parent,
                            limit=QUICK_LIMIT).returncode == 0
    (path.parent / "clean.txt").write_text("The train left at 10:24.\nVersion 1.2.3 costs 12.50 EUR.\n")
    assert journeys.lmforge(["pii-scan", "clean.txt"], path.parent, limit=QUICK_LIMIT).returncode == 0
    missing = journeys.lmforge(["pii-scan", "nowhere.txt"], path.parent, limit=QUICK_LIMIT)
    assert missing.returncode == 2 and "file not found: nowhere.txt" in missing.stderr


@pytest.fixture(scope="module")
def private_run(journeys: Journeys, tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("privacy")
    result = journeys.lmforge(["fit", "--config", "quickstart", "--config", "overlays/privacy",
                               *short_args("quickstart")], workdir)
    return result, workdir / "runs" / "quickstart" / "version_0"


@pytest.mark.slow
def test_redaction_report_and_exposure_are_saved_and_logged(private_run) -> None:
    result, run_dir = private_run
    result.expect_ok()
    report = json.loads((run_dir / "data_report.json").read_text())
    # The bundled corpus holds no personal data: what is redacted in training is the canaries' phone numbers.
    assert report["train"]["canary_insertion"] == {"canaries": 3.0, "copies": float(CANARY_COPIES)}
    assert report["train"]["pii_redaction"]["PHONE"] == CANARY_COPIES
    assert report["train"]["pii_redaction"]["documents_with_pii"] == CANARY_COPIES
    assert "canary_insertion" not in report["val"] and report["val"]["pii_redaction"]["PHONE"] == 0
    rows = read_metrics(run_dir)
    assert metric_values(rows, "data/train/pii_redaction/PHONE") == [(0, CANARY_COPIES)]
    exposures = {r: metric_values(rows, f"privacy/exposure/r{r}") for r in (0, 1, 4, 16)}
    assert all(len(values) == 2 for values in exposures.values()), exposures  # the two validations
    # Redacted, the secrets were never seen: no exposure comes near a memorized one's 13.3 bits.
    assert all(0.0 <= value < 8.0 for values in exposures.values() for _, value in values), exposures
    canaries = json.loads((run_dir / "canaries.json").read_text())
    assert sorted(c["repetitions"] for c in canaries) == [0, 1, 4, 16]
    assert all(c["template"] == "my phone number is +1 415 555 {secret}" for c in canaries)


@pytest.mark.slow
def test_memorization_scores_the_saved_model(private_run, journeys: Journeys) -> None:
    result, run_dir = private_run
    result.expect_ok()
    scored = journeys.lmforge(["memorization", str(run_dir / "checkpoints" / "last.ckpt")], run_dir.parents[2],
                              limit=QUICK_LIMIT).expect_ok()
    rows = [line.split() for line in scored.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert sorted(int(r[0]) for r in rows) == [0, 1, 4, 16], scored.explain("one row per canary")
    assert all(r[4] == "exact" and r[3] == "10000" for r in rows), scored.explain("ranked exactly among 10^4")
    logged = {r: metric_values(read_metrics(run_dir), f"privacy/exposure/r{r}")[-1][1] for r in (0, 1, 4, 16)}
    assert {int(r[0]): float(r[1]) for r in rows} == {r: round(v, 2) for r, v in logged.items()}


@pytest.fixture(scope="module")
def energy_run(journeys: Journeys, tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("energy")
    # A power sample every second: the shortened run lasts seconds.
    result = journeys.lmforge(["fit", "--config", "quickstart", "--config", "overlays/energy",
                               *short_args("quickstart"), "--trainer.callbacks.init_args.measure_power_secs", "1"],
                              workdir)
    return result, workdir


@pytest.mark.slow
def test_energy_is_logged_recorded_and_summed_up(energy_run) -> None:
    result, workdir = energy_run
    result.expect_ok()
    run_dir = workdir / "runs" / "quickstart" / "version_0"
    rows = read_metrics(run_dir)
    kwh = metric_values(rows, "energy/kwh")
    assert len(kwh) >= 2 and all(value > 0 for _, value in kwh), kwh
    for key in ("energy/co2_kg", "energy/cpu_kwh", "energy/ram_kwh", "energy/cpu_w", "energy/gpu_w"):
        assert metric_values(rows, key), f"metrics.csv has no {key}"
    record = yaml.safe_load((run_dir / "hparams.yaml").read_text())["energy"]
    assert record["kwh"] == pytest.approx(kwh[-1][1])
    assert record["methods"]["cpu"].startswith(("measured: ", "estimate: "))
    assert "world average" in record["grid"]
    summary = result.stderr[result.stderr.index("lmforge: trained to step"):]  # the end-of-run summary
    assert f"  energy: {record['kwh']:.3g} kWh" in summary and record["methods"]["cpu"] in summary


@pytest.mark.slow
def test_plot_puts_energy_beside_the_loss(energy_run, journeys: Journeys) -> None:
    result, workdir = energy_run
    result.expect_ok()
    plotted = journeys.lmforge(["plot", "runs/quickstart/version_0"], workdir, limit=QUICK_LIMIT).expect_ok()
    names = {Path(line).name for line in plotted.stdout.split()}
    assert {"energy.png", "val_loss_by_energy.png", "loss.png"} <= names
