"""Every bundled recipe trains single-process, as shipped, shortened only on the command line.

    lmforge fit --config RECIPE --trainer.max_steps 6 ... (sizes and data lengths made small)

A distillation recipe runs after its teacher recipe, in the same working directory, as its header says.
"""

from __future__ import annotations

import pytest

from journey_kit import COVERED_ELSEWHERE, MONITORED, RECIPE_ARGS, Journeys, finite, last_metric, short_args

TRAINING_RECIPES = sorted(RECIPE_ARGS)


def test_the_journeys_cover_every_bundled_recipe(journeys: Journeys, tmp_path) -> None:
    listed = journeys.lmforge(["recipes"], tmp_path).expect_ok().stdout
    recipes = {line.split()[0] for line in listed.splitlines() if line.strip()}
    assert {r for r in recipes if not r.startswith("overlays/")} == set(TRAINING_RECIPES) | set(COVERED_ELSEWHERE)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", TRAINING_RECIPES)
def test_recipe_trains_single_process(recipe: str, fit_recipe) -> None:
    run = fit_recipe(recipe)
    run.result.expect_ok()
    assert run.last_ckpt.is_file(), run.result.explain("no last.ckpt")
    assert (run.run_dir / "config.yaml").is_file()
    assert finite(last_metric(run.run_dir, "val/loss"))
    if recipe in MONITORED:
        assert 0.0 <= last_metric(run.run_dir, MONITORED[recipe]) <= 1.0
    end = run.result.probe("end")
    assert end["global_step"] == 6 and finite(end["last_loss"])


#: What each logger overlay leaves in the working directory after a quickstart run.
LOGGER_OVERLAYS = {
    "overlays/csv": "runs/quickstart/version_0/metrics.csv",
    "overlays/tensorboard": "runs/tensorboard/version_0/events.out.tfevents.*",
    "overlays/wandb": "runs/wandb/offline-run-*/run-*.wandb",
}


@pytest.mark.slow
@pytest.mark.parametrize("overlay", sorted(LOGGER_OVERLAYS))
def test_logger_overlay_composes_with_a_recipe(overlay: str, journeys: Journeys, tmp_path) -> None:
    """``lmforge fit --config quickstart --config overlays/<logger>`` (W&B offline, as without an account)."""
    journeys.lmforge(["fit", "--config", "quickstart", "--config", overlay, *short_args("quickstart")],
                     tmp_path).expect_ok()
    assert list(tmp_path.glob(LOGGER_OVERLAYS[overlay])), f"no {LOGGER_OVERLAYS[overlay]}"
