"""A user's mistake is reported first and alone: exit code 2, the message in the first lines of the output, a
"did you mean" where there is a near name, no usage dump before it and no traceback (unless LMFORGE_DEBUG=1).

    lmforge fit --config quickstart --model.backbone.archtecture gpt2      (a misspelt key)
    lmforge fit --config my-quickstart.yaml                                (a misspelt key in a copied recipe)
    lmforge fit --config quickstart --trainer.max_step 2                   (not max_steps: no prefix matching)
    lmforge fit --config quickstart --model.objective CausalLMM           (an unknown plugin)
    lmforge fit --config quickstrat                                        (an unknown recipe)
    lmforge fit --config quickstart --data.init_args.train missing.txt     (a missing data file)
"""

from __future__ import annotations

from pathlib import Path


from journey_kit import GPT2_SMALL, QUICK_LIMIT, Journeys, Result

#: Small sizes, so that a mistake that is not caught costs seconds (max_steps is what one journey misspells).
SMALL = ["--model.backbone.config", GPT2_SMALL, "--data.init_args.block_size", "32",
         "--data.init_args.tokenizer.train.vocab_size", "500", "--trainer.limit_val_batches", "2"]
FIRST_LINES = 3

USAGE_DUMP = ("LightningCLI's parser prints its ~70-line usage before the message (lmforge/core/cli.py:240-241, "
              "RecipeParser.error calls jsonargparse's error, which prints the usage first)")


def check_user_error(result: Result, names: list[str], suggestion: str | None) -> None:
    """Exit code 2; the first lines of stderr hold the message (naming ``names``) and the suggestion; no usage
    dump before it and no traceback."""
    assert result.returncode == 2, result.explain("expected exit code 2")
    assert "Traceback" not in result.output, result.explain("a traceback for a user error")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    first = "\n".join(lines[:FIRST_LINES])
    assert "usage:" not in first, result.explain("a usage dump comes before the message")
    for name in names:
        assert name in first, result.explain(f"{name!r} is not in the first {FIRST_LINES} lines")
    if suggestion is not None:
        assert "did you mean" in first.lower() and suggestion in first, result.explain(f"no 'did you mean {suggestion}'")


def test_misspelt_key_on_the_command_line(journeys: Journeys, tmp_path: Path) -> None:
    result = journeys.lmforge(["fit", "--config", "quickstart", "--model.backbone.archtecture", "gpt2"], tmp_path,
                              limit=QUICK_LIMIT)
    check_user_error(result, ["archtecture"], "architecture")


def test_misspelt_key_in_a_copied_recipe(journeys: Journeys, tmp_path: Path) -> None:
    journeys.lmforge(["recipes", "cp", "quickstart", "."], tmp_path, limit=QUICK_LIMIT).expect_ok()
    recipe = tmp_path / "quickstart.yaml"
    text = recipe.read_text()
    assert "  max_steps: 600\n" in text
    (tmp_path / "my-quickstart.yaml").write_text(text.replace("  max_steps: 600\n", "  max_stepz: 600\n"))
    result = journeys.lmforge(["fit", "--config", "my-quickstart.yaml"], tmp_path, limit=QUICK_LIMIT)
    check_user_error(result, ["max_stepz"], "max_steps")


def test_a_prefix_of_a_key_is_not_accepted(journeys: Journeys, tmp_path: Path) -> None:
    result = journeys.lmforge(["fit", "--config", "quickstart", "--trainer.max_step", "2", *SMALL], tmp_path,
                              limit=QUICK_LIMIT)
    check_user_error(result, ["max_step"], "max_steps")
    assert not (tmp_path / "runs").exists(), "the run trained"


def test_unknown_plugin_name(journeys: Journeys, tmp_path: Path) -> None:
    result = journeys.lmforge(["fit", "--config", "quickstart", "--model.objective", "CausalLMM"], tmp_path,
                              limit=QUICK_LIMIT)
    check_user_error(result, ["model.objective", "CausalLMM"], "CausalLM")


def test_unknown_config_name(journeys: Journeys, tmp_path: Path) -> None:
    result = journeys.lmforge(["fit", "--config", "quickstrat"], tmp_path, limit=QUICK_LIMIT)
    check_user_error(result, ["quickstrat"], "quickstart")


MISSING_FILE = (
    "a missing data file is found in the DataModule's setup, after Lightning's banner and the litlogger tip, and "
    "the DataFileError (lmforge/core/files.py:62) escapes main (lmforge/core/cli.py:74-81 catches "
    "PluginCompatibilityError and UnpicklingError only): exit code 1 with a 40-line traceback")


def test_missing_data_file(journeys: Journeys, tmp_path: Path) -> None:
    result = journeys.lmforge(["fit", "--config", "quickstart", "--data.init_args.train", "missing.txt", *SMALL],
                              tmp_path, limit=QUICK_LIMIT)
    check_user_error(result, ["data.train", "missing.txt"], None)


def test_lmforge_debug_shows_the_traceback(journeys: Journeys, tmp_path: Path) -> None:
    result = journeys.lmforge(["fit", "--config", "quickstart", "--data.init_args.train", "missing.txt", *SMALL],
                              tmp_path, limit=QUICK_LIMIT, env={"LMFORGE_DEBUG": "1"})
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "missing.txt" in result.stderr
