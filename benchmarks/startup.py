"""Start-up of ``lmforge fit`` against the plain loop: command to the first training step, A/B across installs and checkouts.

Each round runs, in a fresh process and in alternating order, the plain loop of benchmarks/perf.py and
``lmforge fit`` with perf.py's quickstart-shaped recipe (CSV logger, checkpoints, progress bar, sanity
validation; 3 steps) from each checkout given, under each Python (install) given. A run records the wall
time from the command to its first step, the CPU seconds the process had used by then (``getrusage``: much
less disturbed by other load on a shared machine than wall time) and its peak RSS. Ratios to the plain
loop are medians of per-round ratios, with min and max. One untimed run of each checkout under each install
first fills the caches that checkout keeps, so every timed run starts warm, as a user's second run does.

    python benchmarks/startup.py --rounds 5                                   # this checkout, this Python
    python benchmarks/startup.py --rounds 5 --python core=/tmp/core/bin/python --python dev=.venv/bin/python \\
        --tree before=/tmp/lmforge-old --tree after=.                         # two installs x two checkouts

An install given with ``--python`` needs lmforge's dependencies (``pip install -e .`` of any checkout); the
checkout run is the one given with ``--tree`` (through ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import perf  # noqa: E402  (benchmarks/perf.py: the corpus preparation, the recipe and the plain loop)


def named(values: list[str], default: dict[str, str]) -> dict[str, str]:
    out = {}
    for value in values or []:
        name, sep, path = value.partition("=")
        if not sep:
            raise SystemExit(f"startup.py: expected NAME=PATH, got {value!r}")
        out[name] = path
    return out or default


def run(cmd: list[str], tree: str, work: Path, out: Path) -> tuple[float, float, float]:
    env = {**perf.ENV, "LMFORGE_PERF_OUT": str(out), "LMFORGE_PERF_T0": repr(time.time()),
           "PYTHONPATH": os.pathsep.join([str(HERE), str(Path(tree).resolve())])}
    subprocess.run(cmd, env=env, cwd=work, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = json.loads(out.read_text(encoding="utf-8"))
    return r["first_step_s"], r["first_step_cpu_s"], r["max_rss_mb"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--python", action="append", help="NAME=PATH of a Python with lmforge's dependencies")
    parser.add_argument("--tree", action="append", help="NAME=PATH of an lmforge checkout")
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args()
    pythons = named(args.python, {"this": sys.executable})
    trees = named(args.tree, {"lmforge": str(HERE.parent)})
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="lmforge-startup-"))
    shape = argparse.Namespace(steps=3, warmup=1, block_size=128, batch_size=16)
    perf.prepare(work, shape)
    recipe = perf.recipe(work, shape, "startup", bare=False)
    rows: list[tuple[str, dict[str, tuple[float, float, float]]]] = []
    for install, python in pythons.items():  # untimed: fills the caches each checkout keeps (tokenizer, blocks)
        for name in trees:
            run([python, "-m", "lmforge", "fit", "--config", str(recipe)], trees[name], work, work / "warm.json")
    for rnd in range(args.rounds):
        for install, python in pythons.items():
            order = ["plain", *trees]
            if rnd % 2:
                order.reverse()  # nobody always goes first
            row = {}
            for name in order:
                out = work / f"startup-{name}.json"
                if name == "plain":
                    cmd = [python, str(HERE / "perf.py"), "--worker", "plain", "--steps", "3", "--warmup", "1",
                           "--work-dir", str(work), "--result", str(out)]
                    row[name] = run(cmd, str(HERE.parent), work, out)
                else:
                    row[name] = run([python, "-m", "lmforge", "fit", "--config", str(recipe)], trees[name], work, out)
            rows.append((install, row))
            print(f"round {rnd + 1} {install}: " + ", ".join(
                f"{k} {v[0]:.2f} s ({v[1]:.2f} cpu s, {v[2]:.0f} MB)" for k, v in row.items()), flush=True)
    print("\nratio to the plain loop, median of per-round ratios [min, max] (medians of the values):")
    for install in pythons:
        mine = [r for i, r in rows if i == install]
        for tree in trees:
            for k, what in enumerate(("first step (wall)", "first step (CPU)", "peak RSS")):
                ratios = [r[tree][k] / r["plain"][k] for r in mine]
                print(f"  {install:<8} {tree:<8} {what:<18} {statistics.median(ratios):.3f} "
                      f"[{min(ratios):.3f}, {max(ratios):.3f}]  ({statistics.median(r[tree][k] for r in mine):.2f} "
                      f"vs {statistics.median(r['plain'][k] for r in mine):.2f})")


if __name__ == "__main__":
    main()
