"""Energy and emissions of bundled recipes, as `EnergyMonitor` (overlays/energy) measures them on this machine.

Runs ``lmforge fit --config RECIPE --config overlays/energy`` for each recipe in turn, in one working
directory (so that distill-clm finds the teacher that clm-pretrain wrote), and prints the figures the run
record keeps (``energy`` in ``hparams.yaml``): kWh, g CO2-eq, mean power per device kind, how each was
measured, and the wall time. ``--steps`` shortens every run alike (the recipe's own otherwise), so that
a teacher's training and its student's distillation compare per step.

    python benchmarks/energy_recipes.py quickstart
    python benchmarks/energy_recipes.py clm-pretrain distill-clm --steps 200

On a machine without readable RAPL counters (most VMs and containers) the CPU figure is CodeCarbon's
estimate from the CPU's load and TDP, and RAM is always an estimate: the table says which. The grid is
CodeCarbon's world average unless ``--country`` is given.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

LMFORGE = str(Path(sys.executable).parent / "lmforge")


def fit(workdir: Path, recipe: str, steps: int | None, country: str | None) -> tuple[dict, float, int]:
    """One run; its energy record, the seconds it took and the steps it trained."""
    command = [LMFORGE, "fit", "--config", recipe, "--config", "overlays/energy",
               "--trainer.enable_progress_bar", "false",
               "--trainer.callbacks.init_args.measure_power_secs", "2"]
    if steps is not None:
        command += ["--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(max(steps // 2, 1))]
    if country:
        command += ["--trainer.callbacks.init_args.country_iso_code", country]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "LMFORGE_CACHE": str(workdir / "cache")})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    run_dir = sorted((workdir / "runs" / recipe).glob("version_*"), key=lambda p: int(p.name.split("_")[1]))[-1]
    hparams = yaml.safe_load((run_dir / "hparams.yaml").read_text())
    with open(run_dir / "metrics.csv", newline="") as f:
        trained = max(int(r["step"]) for r in csv.DictReader(f) if r.get("step"))
    return hparams["energy"], seconds, trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipes", nargs="+")
    parser.add_argument("--steps", type=int, default=None, help="max_steps of every run (default: the recipe's)")
    parser.add_argument("--country", default=None, help="3-letter ISO code of the grid (default: world average)")
    parser.add_argument("--keep", default=None, help="keep the runs in this directory")
    args = parser.parse_args()
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="lmforge-energy-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for recipe in args.recipes:
        energy, seconds, steps = fit(workdir, recipe, args.steps, args.country)
        rows.append((recipe, energy, seconds, steps))
    print(f"{'recipe':<14}{'steps':>6}{'wall s':>8}{'Wh':>9}{'Wh/100 steps':>14}{'g CO2-eq':>10}"
          f"{'CPU W':>7}{'RAM W':>7}")
    for recipe, e, seconds, steps in rows:
        per = f"{e['kwh'] * 1000 * 100 / steps:.3f}" if steps else "-"
        print(f"{recipe:<14}{steps:>6}{seconds:>8.0f}{e['kwh'] * 1000:>9.3f}{per:>14}{e['co2_kg'] * 1000:>10.3f}"
              f"{e['cpu_w']:>7.1f}{e['ram_w']:>7.1f}")
    first = rows[0][1]
    print(f"\nCPU: {first['methods'].get('cpu')}; RAM: {first['methods'].get('ram')}; grid: {first['grid']}")
    print(f"{os.cpu_count()} CPUs; runs in {workdir}")


if __name__ == "__main__":
    main()
