"""``lmforge plot`` on the CSV log of a real run: the plotted data, overlays and metric errors."""

from __future__ import annotations

import csv

import pytest

from lmforge.cli.main import main
from lmforge.cli.plot import PlotError, build_charts, draw, find_metrics_file, read_metrics, run_labels


def csv_columns(path):
    """Independent reading: key -> [(step, value)] for every non-empty cell."""
    columns: dict[str, list[tuple[int, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key not in ("step", "epoch") and value:
                    columns.setdefault(key, []).append((int(row["step"]), float(value)))
    return columns


def lines_of(figure):
    """label -> [(x, y)] of every line drawn on every axis."""
    return {line.get_label(): [tuple(p) for p in line.get_xydata().tolist()]
            for ax in figure.axes for line in ax.get_lines() if not line.get_label().startswith("_")}


@pytest.fixture(scope="module")
def one_run(observed_run):
    path = observed_run.runs[0] / "metrics.csv"
    return {"tiny/version_0": read_metrics(path)}, csv_columns(path)


def test_charts_plot_the_logged_series(one_run):
    runs, columns = one_run
    charts = {chart.name: chart for chart in build_charts(runs)}
    assert set(charts) == {"loss", "loss_terms", "perplexity", "grad_norm", "lr", "throughput"}
    expected = {
        "loss": {"loss": ["loss/total", "val/loss"]},
        "loss_terms": {"loss/causal_lm": ["loss/causal_lm"], "loss/weight_penalty": ["loss/weight_penalty"]},
        "perplexity": {"perplexity": ["metric/perplexity", "val/perplexity"]},
        "grad_norm": {"grad_norm": ["metric/grad_norm"]},
        "lr": {"learning rate": ["lr-AdamW/decay", "lr-AdamW/no_decay"]},
        "throughput": {"throughput": ["train/device/items_per_sec"]},
    }
    for name, panels in expected.items():
        chart = charts[name]
        assert {panel: [s.key for s in series] for panel, series in chart.panels.items()} == panels, name
        figure = draw(chart)
        assert len(figure.axes) == len(panels)
        drawn = lines_of(figure)
        for series in (s for panel in chart.panels.values() for s in panel):
            assert list(zip(series.steps, series.values)) == columns[series.key]
            assert drawn[series.key] == [(float(x), y) for x, y in columns[series.key]]


def test_perplexity_is_drawn_on_a_log_scale_and_loss_on_a_linear_one(one_run):
    runs, _ = one_run
    charts = {chart.name: chart for chart in build_charts(runs)}
    assert [ax.get_yscale() for ax in draw(charts["perplexity"]).axes] == ["log"]
    assert [ax.get_yscale() for ax in draw(charts["loss"]).axes] == ["linear"]


def test_learning_rate_follows_the_warmup(one_run):
    _, columns = one_run
    lrs = [v for _, v in columns["lr-AdamW/decay"]]
    assert lrs[0] < lrs[1]  # warmup_steps=2 then cosine decay: the chart shows a real schedule
    assert columns["lr-AdamW/decay"] == columns["lr-AdamW/no_decay"]


def test_plot_command_writes_pngs(observed_run, tmp_path, capsys):
    run = observed_run.runs[0]
    assert main(["plot", str(run), "--out", str(tmp_path)]) == 0
    written = capsys.readouterr().out.split()
    names = {"loss", "loss_terms", "perplexity", "grad_norm", "lr", "throughput"}
    assert sorted(written) == sorted(str(tmp_path / f"{n}.png") for n in names)
    for path in tmp_path.iterdir():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_runs_are_overlaid(observed_run, tmp_path):
    files = [find_metrics_file(run) for run in observed_run.runs]
    labels = run_labels(files)
    assert labels == ["tiny/version_0", "tiny/version_1"]
    runs = {label: read_metrics(path) for label, path in zip(labels, files)}
    (loss,) = [c for c in build_charts(runs, ["loss/total", "val/loss"]) if c.name == "loss"]
    drawn = lines_of(draw(loss))
    resumed = csv_columns(files[1])
    assert drawn["tiny/version_0: loss/total"] == [(float(x), y) for x, y in csv_columns(files[0])["loss/total"]]
    assert drawn["tiny/version_1: loss/total"] == [(float(x), y) for x, y in resumed["loss/total"]]
    assert main(["plot", *map(str, observed_run.runs), "--metrics", "loss/*", "--out", str(tmp_path)]) == 0
    assert {p.name for p in tmp_path.iterdir()} == {"loss.png", "loss_terms.png"}


def test_a_misspelled_metric_lists_the_available_ones(observed_run, capsys):
    assert main(["plot", str(observed_run.runs[0]), "--metrics", "val/los"]) == 2
    err = capsys.readouterr().err
    assert "no metric 'val/los'" in err and "Did you mean 'val/loss'?" in err
    assert "Available metrics: loss/causal_lm, loss/total," in err and "val/perplexity" in err


def test_a_missing_metric_and_a_run_without_a_log_are_errors(observed_run, tmp_path):
    with pytest.raises(PlotError, match=r"no metric 'bias/\*'.*Available metrics: .*loss/total"):
        build_charts({"r": read_metrics(observed_run.runs[0] / "metrics.csv")}, ["bias/*"])
    with pytest.raises(PlotError, match="no metrics.csv in it or below it"):
        find_metrics_file(tmp_path)
    with pytest.raises(PlotError, match="holds several runs"):
        find_metrics_file(observed_run.runs[0].parent)


def test_bias_scores_share_one_axis_with_the_unbiased_line():
    from lmforge.cli.plot import Series

    runs = {"r": {"bias/gender": Series("", "bias/gender", [9, 19], [62.0, 55.0]),
                  "bias/race": Series("", "bias/race", [9, 19], [58.0, 51.0]),
                  "train/device/mfu": Series("", "train/device/mfu", [9, 19], [0.3, 0.31])}}
    charts = {chart.name: chart for chart in build_charts(runs)}
    assert set(charts) == {"bias", "mfu"}
    figure = draw(charts["bias"])
    (ax,) = figure.axes
    assert lines_of(figure) == {"bias/gender": [(9.0, 62.0), (19.0, 55.0)], "bias/race": [(9.0, 58.0), (19.0, 51.0)]}
    assert [line.get_ydata()[0] for line in ax.get_lines() if line.get_label().startswith("_")] == [50.0]
