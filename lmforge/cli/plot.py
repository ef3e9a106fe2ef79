"""``lmforge plot``: PNG charts of runs' ``metrics.csv`` (the CSV logger's), one or several runs overlaid.

Charts, one PNG each, for whatever the runs logged:

=================  ============================================================  ==========================
file               series                                                        one axis because
=================  ============================================================  ==========================
``loss.png``       ``loss/total`` (train), ``val/loss``, ``test/loss``           same unit (nats per token)
``loss_terms.png`` each ``loss/<term>`` on its own panel (when there are several)  terms differ in scale
``perplexity.png`` ``metric/perplexity``, ``val/perplexity``, ``test/perplexity`` (log scale: it falls by
                   orders of magnitude)
``<name>.png``     ``metric/<name>``, ``val/<name>``, ``test/<name>`` (accuracy, grad_norm, ...)
``lr.png``         every ``lr-*`` (``LearningRateMonitor``)
``throughput.png`` tokens/s: ``train/device/items_per_sec`` (and the all-device total)
``mfu.png``        ``train/device/mfu``
``bias.png``       every ``bias/<type>``, with the unbiased score 50 marked
=================  ============================================================  ==========================

Train lines are solid, validation dashed with markers, test dotted; each run
has its own colours. ``--metrics`` picks columns (exact names or globs such
as ``bias/*``); any other logged column can be asked for and gets its own
chart. `build_charts` returns the data each chart plots, `draw` the figure.
"""

from __future__ import annotations

import csv
import difflib
import fnmatch
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METRICS_FILE = "metrics.csv"
#: Charts drawn on a logarithmic y axis: perplexity starts near the vocabulary size and ends near 1.
LOG_SCALE_CHARTS = ("perplexity",)
#: Columns that are not metrics.
INDEX_COLUMNS = ("step", "epoch")
SPLIT_PREFIXES = {"val/": "val", "test/": "test"}
LINE_STYLES = {"train": {"linestyle": "-"}, "val": {"linestyle": "--", "marker": "o", "markersize": 4},
               "test": {"linestyle": ":", "marker": "s", "markersize": 4}}
THROUGHPUT_DEFAULTS = ("train/device/items_per_sec", "train/items_per_sec", "train/device/mfu")


class PlotError(ValueError):
    """A run directory or metric that ``lmforge plot`` cannot use."""


@dataclass
class Series:
    """One metric of one run: the points a chart draws."""

    run: str
    key: str
    steps: list[int]
    values: list[float]

    @property
    def split(self) -> str:
        return next((split for prefix, split in SPLIT_PREFIXES.items() if self.key.startswith(prefix)), "train")


@dataclass
class Chart:
    """One PNG: one panel (axis) per entry of ``panels``."""

    name: str
    ylabel: str
    panels: dict[str, list[Series]] = field(default_factory=dict)
    reference: float | None = None
    log_scale: bool = False


@dataclass(frozen=True)
class _Group:
    chart: str
    panel: str
    ylabel: str
    default: bool = True  # drawn without --metrics


def group_of(key: str) -> _Group:
    """Which chart and panel a metric belongs to."""
    if key in ("loss/total", "val/loss", "test/loss"):
        return _Group("loss", "loss", "loss")
    if key.startswith("loss/"):
        return _Group("loss_terms", key, "loss term")
    if key.startswith("lr-"):
        return _Group("lr", "learning rate", "learning rate")
    if key.startswith("bias/"):
        return _Group("bias", "bias", "bias score (%)")
    if key.startswith("train/"):
        if key.endswith("items_per_sec"):
            return _Group("throughput", "throughput", "tokens/s")
        if key.endswith("mfu"):
            return _Group("mfu", "mfu", "model FLOPs utilization")
        return _Group(_file_name(key), key, key, default=False)  # ThroughputMonitor's counters
    for prefix in ("metric/", "val/", "test/"):
        if key.startswith(prefix):
            name = key[len(prefix):]
            return _Group(_file_name(name), name, name)
    return _Group(_file_name(key), key, key)


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "metric"


def find_metrics_file(run_dir: str | Path) -> Path:
    """``run_dir/metrics.csv``, or the only ``metrics.csv`` below ``run_dir``."""
    run_dir = Path(run_dir)
    if run_dir.is_file() and run_dir.name == METRICS_FILE:
        return run_dir
    if not run_dir.is_dir():
        raise PlotError(f"{run_dir}: no such run directory.")
    if (run_dir / METRICS_FILE).is_file():
        return run_dir / METRICS_FILE
    found = sorted(run_dir.rglob(METRICS_FILE))
    if len(found) == 1:
        return found[0]
    if not found:
        raise PlotError(
            f"{run_dir}: no {METRICS_FILE} in it or below it. lmforge plot reads the CSV logger's {METRICS_FILE} "
            "(runs/<recipe>/version_N/); the bundled recipes and overlays/wandb log one."
        )
    listed = ", ".join(str(p.parent) for p in found)
    raise PlotError(f"{run_dir}: holds several runs ({listed}); name the ones to plot.")


def read_metrics(path: str | Path) -> dict[str, Series]:
    """Every metric column of a Lightning ``metrics.csv``, as points ordered by row."""
    series: dict[str, Series] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if not row.get("step"):
                continue
            step = int(float(row["step"]))
            for key, value in row.items():
                if key in INDEX_COLUMNS or key is None or value in (None, ""):
                    continue
                points = series.setdefault(key, Series("", key, [], []))
                points.steps.append(step)
                points.values.append(float(value))
    return series


def run_labels(paths: Sequence[Path]) -> list[str]:
    """Short, distinct names for runs: ``quickstart/version_0`` rather than the whole path."""
    dirs = [p.resolve().parent for p in paths]
    for depth in (2, 3, 4):
        labels = ["/".join(d.parts[-depth:]) for d in dirs]
        if len(set(labels)) == len(labels):
            return labels
    return [str(d) for d in dirs]


def select_keys(available: Sequence[str], wanted: Sequence[str] | None) -> list[str]:
    """The columns to draw: the defaults, or those ``wanted`` names or globs match (a clear error if one is absent)."""
    if not wanted:
        return [k for k in available if group_of(k).default]
    chosen: list[str] = []
    for name in wanted:
        matches = [k for k in available if fnmatch.fnmatchcase(k, name)] if any(c in name for c in "*?[") else \
            [name] if name in available else []
        if not matches:
            near = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
            raise PlotError(f"--metrics: no metric {name!r} in the run(s).{hint} Available metrics: "
                            f"{', '.join(available)}.")
        chosen.extend(m for m in matches if m not in chosen)
    return chosen


def build_charts(runs: dict[str, dict[str, Series]], metrics: Sequence[str] | None = None) -> list[Chart]:
    """The charts for ``runs`` (run label -> its series), in a stable order."""
    available = sorted({k for series in runs.values() for k in series})
    keys = select_keys(available, metrics)
    charts: dict[str, Chart] = {}
    for run, series in runs.items():
        for key in keys:
            if key not in series:
                continue
            group = group_of(key)
            chart = charts.setdefault(group.chart, Chart(group.chart, group.ylabel,
                                                         reference=50.0 if group.chart == "bias" else None,
                                                         log_scale=group.chart in LOG_SCALE_CHARTS))
            points = series[key]
            chart.panels.setdefault(group.panel, []).append(Series(run, key, points.steps, points.values))
    # One loss term is loss/total again: the panel-per-term chart only helps when there are several.
    terms = charts.get("loss_terms")
    if terms is not None and len(terms.panels) < 2 and not metrics:
        del charts["loss_terms"]
    return list(charts.values())


def draw(chart: Chart, title: str | None = None) -> Figure:
    """The figure of one chart (matplotlib, no pyplot state)."""
    from matplotlib.figure import Figure

    n = len(chart.panels)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(6.4 * cols, 4.2 * rows), layout="constrained")
    runs = list(dict.fromkeys(s.run for panel in chart.panels.values() for s in panel))
    for index, (panel, series) in enumerate(chart.panels.items()):
        ax = fig.add_subplot(rows, cols, index + 1)
        bases = list(dict.fromkeys(_base(s.key) for s in series))
        for s in series:
            color = f"C{(runs.index(s.run) * len(bases) + bases.index(_base(s.key))) % 10}"
            label = f"{s.run}: {s.key}" if len(runs) > 1 else s.key
            ax.plot(s.steps, s.values, color=color, label=label, **LINE_STYLES[s.split])
        if chart.reference is not None:
            ax.axhline(chart.reference, color="0.5", linewidth=0.8, linestyle=":")
        if chart.log_scale:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(chart.ylabel if n == 1 else panel)
        ax.set_title(panel if n > 1 else (title or chart.name))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if n > 1 and title:
        fig.suptitle(title)
    return fig


def _base(key: str) -> str:
    """``val/loss`` and ``loss/total`` are one quantity; ``metric/x``, ``val/x`` and ``test/x`` too."""
    if key in ("loss/total", "val/loss", "test/loss"):
        return "loss"
    for prefix in ("metric/", "val/", "test/"):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def plot_runs(run_dirs: Sequence[str | Path], metrics: Sequence[str] | None = None,
              out: str | Path | None = None) -> list[Path]:
    """Write one PNG per chart of ``run_dirs`` into ``out``; returns the files written.

    ``out`` defaults to ``<run>/plots`` for one run and ``./plots`` for several.
    """
    if not run_dirs:
        raise PlotError("give at least one run directory.")
    files = [find_metrics_file(d) for d in run_dirs]
    labels = run_labels(files)
    runs = {label: read_metrics(path) for label, path in zip(labels, files)}
    charts = build_charts(runs, metrics)
    if not charts:
        raise PlotError(f"{', '.join(map(str, run_dirs))}: {METRICS_FILE} holds no metrics yet.")
    out_dir = Path(out) if out is not None else (files[0].parent / "plots" if len(files) == 1 else Path("plots"))
    out_dir.mkdir(parents=True, exist_ok=True)
    title = " vs ".join(labels)
    written = []
    for chart in charts:
        path = out_dir / f"{chart.name}.png"
        draw(chart, title=f"{chart.name} — {title}").savefig(path, dpi=100)
        written.append(path)
    return written
