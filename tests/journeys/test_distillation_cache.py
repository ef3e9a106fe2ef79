"""Distilling from cached teacher outputs, as a user does it: the distill-clm recipe with ``teacher_top_k``, twice.

    lmforge fit --config distill-clm --model.distiller.init_args.teacher_top_k 16 \\
        --model.distiller.init_args.teacher_cache teacher-topk --model.distiller.init_args.temperature 1.0
    lmforge fit --config distill-clm ...    # the same command again: a second run over the same data

The first run fills the cache: every row it trains on is a miss the first time. The second run trains on the
same rows (same seed, same data) and finds every one of them in the files the first left, so the teacher does
not run for them; both runs log ``metric/logit_distillation/teacher_cache_{hits,misses}`` per step.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from journey_kit import PROBE, TEACHERS, Journeys, finite, last_metric, metric_values, read_metrics, short_args

HITS = "metric/logit_distillation/teacher_cache_hits"
MISSES = "metric/logit_distillation/teacher_cache_misses"
CACHED = ["--model.distiller.init_args.teacher_top_k", "16", "--model.distiller.init_args.teacher_cache",
          "teacher-topk", "--model.distiller.init_args.temperature", "1.0"]


@pytest.mark.slow
def test_a_second_run_distils_from_the_teacher_outputs_the_first_cached(journeys: Journeys, fit_recipe,
                                                                          tmp_path: Path) -> None:
    teacher = fit_recipe(TEACHERS["distill-clm"])
    teacher.result.expect_ok()
    shutil.copytree(teacher.workdir / "runs" / "clm-pretrain", tmp_path / "runs" / "clm-pretrain")
    command = ["fit", "--config", "distill-clm", *short_args("distill-clm"), *CACHED, PROBE]

    first = journeys.lmforge(command, tmp_path)
    first.expect_ok()
    stored = list((tmp_path / "teacher-topk").glob("*/shard-*.pt"))
    assert stored, first.explain("the first run wrote no cache file under teacher-topk/")
    first_run = tmp_path / "runs" / "distill-clm" / "version_0"
    first_misses = metric_values(read_metrics(first_run), MISSES)
    assert first_misses and first_misses[0][1] > 0, first.explain(f"the first run's first logged step: {first_misses}")

    second = journeys.lmforge(command, tmp_path)
    second.expect_ok()
    second_run = tmp_path / "runs" / "distill-clm" / "version_1"
    rows = read_metrics(second_run)
    hits, misses = metric_values(rows, HITS), metric_values(rows, MISSES)
    assert hits and misses, second.explain(f"{second_run}/metrics.csv logs no teacher cache counts")
    assert all(value == 0 for _, value in misses), second.explain(f"the second run missed rows: {misses}")
    assert all(value > 0 for _, value in hits), hits
    assert finite(last_metric(second_run, "val/loss"))
    assert second.probe("end")["global_step"] == 6
