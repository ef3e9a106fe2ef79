"""Memorization of canaries on the bundled corpus, by repetitions, with and without PII redaction.

Runs the quickstart recipe (a 2-layer GPT-2 on lmforge's bundled corpus) twice with the real ``lmforge fit``:
once with `CanaryInsertion` alone and once with `CanaryInsertion` followed by `PIIRedaction`, the canaries
being phone numbers ("my phone number is +1 415 555 NNNN": 10^4 candidates, ranked exactly) inserted
``--canaries`` times for each entry of ``--repetitions``. `MemorizationProbe` logs the exposure at every
validation; the table gives the last validation's mean exposure per number of repetitions (Carlini et al.
2019: log2 10^4 = 13.3 bits for a memorized secret, about 1 by chance).

    python benchmarks/memorization.py                      # 600 steps each, as the quickstart
    python benchmarks/memorization.py --steps 300 --repetitions 0 1 4 16

Each run takes what the quickstart takes (about 2 minutes on 2 quiet CPU cores), plus the detector on the
training split once (the dataset cache keeps the result) and ~1 s of candidate scoring per validation.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LMFORGE = str(Path(sys.executable).parent / "lmforge")
TEMPLATE = "my phone number is +1 415 555 {secret}"


def overlay(repetitions: list[int], canaries: int, redact: bool) -> str:
    filters = [f"""    - class_path: CanaryInsertion
      init_args: {{repetitions: {repetitions}, canaries: {canaries}, template: "{TEMPLATE}", digits: 4,
                  separator: "", seed: 0}}"""]
    if redact:
        filters.append("    - class_path: PIIRedaction")
    return ("model:\n  data_filters:\n" + "\n".join(filters) + "\ntrainer:\n  callbacks+:\n"
            "    - class_path: lmforge.plugins.privacy.memorization_probe.MemorizationProbe\n")


def run(workdir: Path, name: str, args: argparse.Namespace, redact: bool) -> tuple[dict[int, float], dict, float]:
    """Fit once; the last validation's exposure by repetitions, the data report and the seconds taken."""
    (workdir / f"{name}.yaml").write_text(overlay(args.repetitions, args.canaries, redact))
    command = [LMFORGE, "fit", "--config", "quickstart", "--config", f"{name}.yaml",
               "--trainer.max_steps", str(args.steps), "--trainer.enable_progress_bar", "false",
               "--trainer.logger.init_args.name", name]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "LMFORGE_CACHE": str(workdir / "cache")})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    run_dir = workdir / "runs" / name / "version_0"
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get(f"privacy/exposure/r{args.repetitions[0]}")]
    last = rows[-1]
    exposure = {r: float(last[f"privacy/exposure/r{r}"]) for r in args.repetitions}
    report = json.loads((run_dir / "data_report.json").read_text())
    return exposure, report, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--repetitions", type=int, nargs="+", default=[0, 1, 2, 4, 8, 16, 32])
    parser.add_argument("--canaries", type=int, default=2, help="canaries per entry of --repetitions")
    parser.add_argument("--keep", default=None, help="keep the runs in this directory")
    args = parser.parse_args()
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="lmforge-memorization-"))
    workdir.mkdir(parents=True, exist_ok=True)
    plain, plain_report, plain_s = run(workdir, "canaries", args, redact=False)
    redacted, redacted_report, redacted_s = run(workdir, "canaries-redacted", args, redact=True)
    phones = redacted_report["train"]["pii_redaction"]["PHONE"]
    copies = plain_report["train"]["canary_insertion"]["copies"]
    print(f"quickstart, {args.steps} steps, {args.canaries} canaries per row, '{TEMPLATE}' (10^4 candidates, exact "
          f"rank); the last validation's mean exposure in bits (at most 13.29; about 1 by chance)")
    print(f"\n{'repetitions':>11}  {'without redaction':>17}  {'with PIIRedaction':>17}")
    for r in args.repetitions:
        print(f"{r:>11}  {plain[r]:>17.2f}  {redacted[r]:>17.2f}")
    print(f"\n{copies:.0f} canary copies inserted; PIIRedaction redacted {phones:.0f} phone numbers in the training split")
    print(f"runs: {plain_s:.0f} s without, {redacted_s:.0f} s with redaction ({os.cpu_count()} CPUs); in {workdir}")


if __name__ == "__main__":
    main()
