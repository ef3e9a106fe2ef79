"""What the console shows during and after a training run: no noise a user cannot act on, and a summary.

    lmforge fit --config quickstart ...            (the session's quickstart run)
    lmforge fit --config finetune-sentiment ...    (the session's finetune-sentiment run)
"""

from __future__ import annotations

import re

import pytest

SUMMARY_LINES = 20  # the summary is among the last lines of the output


@pytest.mark.slow
def test_no_litlogger_tip(fit_recipe) -> None:
    result = fit_recipe("quickstart").result.expect_ok()
    assert "litlogger" not in result.output.lower()


@pytest.mark.slow
def test_progress_bar_shows_no_negative_epoch_count_or_version_number(fit_recipe) -> None:
    result = fit_recipe("quickstart").result.expect_ok()
    assert not re.search(r"Epoch \d+/-\d+", result.output), "the progress bar shows 'Epoch N/-2'"
    assert "v_num" not in result.output


def summary(output: str) -> str:
    return "\n".join(output.splitlines()[-SUMMARY_LINES:])


NO_SUMMARY = "no end-of-run summary exists: the run ends with Lightning's '`Trainer.fit` stopped: ...' line"


@pytest.mark.slow
def test_run_ends_with_a_summary_and_the_next_commands(fit_recipe) -> None:
    run = fit_recipe("quickstart")
    end = summary(run.result.expect_ok().output)
    assert "val/loss" in end and "perplexity" in end, end
    assert run.best_ckpt().name in end, f"the best checkpoint is not named:\n{end}"
    assert "runs/quickstart/version_0" in end, end
    assert "lmforge export" in end and "lmforge plot" in end, end


@pytest.mark.slow
def test_classifier_run_summary_names_its_metric(fit_recipe) -> None:
    run = fit_recipe("finetune-sentiment")
    end = summary(run.result.expect_ok().output)
    assert "macro_f1" in end and run.best_ckpt().name in end, end
