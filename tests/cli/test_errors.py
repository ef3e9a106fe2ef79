"""User errors come first and alone (`lmforge.cli.errors`, `RecipeParser.error`): ``lmforge: error: ...`` on the
first line, exit code 2, a "did you mean" where a name is near, no usage text and no traceback; abbreviated
options are refused; ``--debug`` shows the traceback; a bug keeps its traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.cli.errors import RUN_STOPPED, USER_ERROR, classify
from lmforge.cli.main import main
from lmforge.core.data.files import resolve_files
from lmforge.core.module import NonFiniteLossError

LMFORGE = str(Path(sys.executable).parent / "lmforge")
SMALL = ["--model.backbone.config", "{n_layer: 1, n_embd: 16, n_head: 2, n_positions: 128}"]


def run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, list[str]]:
    """Exit code and the non-empty lines of stderr of ``lmforge ARGV`` run in this process."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def first_and_alone(code: int, lines: list[str], *names: str, suggestion: str | None = None) -> None:
    assert code == USER_ERROR
    assert lines[0].startswith("lmforge: error: "), lines[:3]
    head = "\n".join(lines[:2])
    for name in names:
        assert name in head, head
    if suggestion is not None:
        assert f"Did you mean {suggestion!r}?" in head, head
    everything = "\n".join(lines)
    assert "usage:" not in everything and "Traceback" not in everything


@pytest.mark.parametrize(("argv", "names", "suggestion"), [
    (["--model.backbone.archtecture", "gpt2"], ["archtecture"], "model.backbone.architecture"),
    (["--trainer.max_step", "2"], ["trainer.max_step"], "trainer.max_steps"),  # not taken as max_steps
    (["--model.objective", "CausalLMM"], ["model.objective", "CausalLMM"], "CausalLM"),
    (["--data.init_args.tain", "x.txt"], ["tain"], None),
])
def test_recipe_mistakes_on_the_command_line(argv, names, suggestion, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    code, lines = run(["fit", "--config", "quickstart", *argv], capsys)
    first_and_alone(code, lines, *names, suggestion=suggestion)
    assert not (tmp_path / "runs").exists()


def test_misspelt_key_in_a_recipe_file(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["recipes", "cp", "quickstart", "."]) == 0
    text = (tmp_path / "quickstart.yaml").read_text().replace("  max_steps: 600\n", "  max_stepz: 600\n")
    (tmp_path / "mine.yaml").write_text(text)
    capsys.readouterr()
    first_and_alone(*run(["fit", "--config", "mine.yaml"], capsys), "max_stepz", suggestion="trainer.max_steps")


def test_unknown_recipe_and_command_names(capsys) -> None:
    first_and_alone(*run(["fit", "--config", "quickstrat"], capsys), "quickstrat", suggestion="quickstart")
    first_and_alone(*run(["fit", "--config", "overlays/ddpp"], capsys), "ddpp", suggestion="overlays/ddp")
    first_and_alone(*run(["fti", "--config", "quickstart"], capsys), "fti", suggestion="fit")


def test_missing_data_file_is_named_before_any_training(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    code, lines = run(["fit", "--config", "quickstart", *SMALL, "--data.init_args.train", "missing.txt"], capsys)
    lines = [line for line in lines if not line.startswith("Seed set to")]  # Lightning's line from seeding
    first_and_alone(code, lines, "data.train", "missing.txt")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_bad_data_found_while_reading_is_a_user_error(tmp_path) -> None:
    """Found in the DataModule's setup, after Lightning's set-up lines: the message alone, no traceback (the real
    command, in a subprocess: what a user's terminal shows)."""
    (tmp_path / "docs.jsonl").write_text(json.dumps({"text": "fine"}) + "\n" + "not json\n")
    done = subprocess.run([LMFORGE, "fit", "--config", "quickstart", *SMALL, "--data.init_args.train", "docs.jsonl",
                           "--data.init_args.val", "docs.jsonl"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == USER_ERROR
    assert done.stderr.splitlines()[-1] == (
        "lmforge: error: data.train: docs.jsonl, line 2: malformed JSON (Expecting value). Fix the line, or set "
        "data.skip_bad_lines: true to skip such lines (counted per file in the log).")
    assert "Traceback" not in done.stderr


def test_debug_shows_the_traceback(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    # setenv records the variable, so that what main() sets for the run's processes is undone afterwards
    # (delenv of an absent variable records nothing).
    monkeypatch.setenv("LMFORGE_DEBUG", "0")
    with pytest.raises(ValueError, match="data.train: file not found"):
        main(["fit", "--config", "quickstart", *SMALL, "--data.init_args.train", "missing.txt", "--debug"])


def _not_lmforge() -> None:
    raise ValueError("a library's own ValueError")


def test_only_errors_lmforge_raises_on_purpose_are_user_errors(tmp_path) -> None:
    try:
        resolve_files([str(tmp_path / "nothing.txt")], "data.train")
    except ValueError as exc:
        assert classify(exc) == USER_ERROR
    try:
        _not_lmforge()  # raised outside lmforge's package: a bug somewhere, its traceback is kept
    except ValueError as exc:
        assert classify(exc) is None
    assert classify(NonFiniteLossError("step 3: the loss went non-finite")) == RUN_STOPPED
    assert classify(KeyError("x")) is None and classify(AttributeError("x")) is None
