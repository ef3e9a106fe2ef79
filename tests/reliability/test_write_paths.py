"""A recipe writes under the working directory unless the user allows more on the command line.

Output paths (``trainer.default_root_dir``, a logger's ``save_dir``, a callback's ``dirpath``,
``data.init_args.cache_dir``) that resolve outside are refused before anything is read or written, naming
the key; a symlink the user made inside is followed; ``--allow_outside_run_dir`` or
``LMFORGE_ALLOW_OUTSIDE_WRITES=1`` allow them, and a recipe cannot grant itself that.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from reliability_kit import lmforge, nothing_tokenized

from lmforge.runtime.run_paths import is_inside


@pytest.fixture
def outside(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory outside the project (a sibling of it), which must stay empty."""
    return tmp_path_factory.mktemp("outside")


CASES = {
    "trainer.default_root_dir": lambda out: ["--trainer.default_root_dir", str(out / "runs")],
    "trainer.logger.init_args.save_dir": lambda out: ["--trainer.logger.init_args.save_dir", "../escaped"],
    "trainer.callbacks[0].init_args.dirpath": lambda out: [
        "--trainer.callbacks", '[{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", '
                               f'"init_args": {{"dirpath": "{out / "ckpt"}"}}}}]'],
    "data.init_args.cache_dir": lambda out: ["--data.init_args.cache_dir", str(out / "cache")],
}


@pytest.mark.parametrize("key", sorted(CASES))
def test_a_path_outside_the_run_directory_is_refused_naming_the_key(key: str, project: Path, outside: Path,
                                                                    capsys) -> None:
    assert lmforge("fit", "--config", "tiny.yaml", *CASES[key](outside)) == 2
    err = capsys.readouterr().err
    assert f"the recipe writes outside the run directory {project}" in err
    assert f"  {key}: " in err and "--allow_outside_run_dir" in err and "LMFORGE_ALLOW_OUTSIDE_WRITES=1" in err
    assert list(outside.iterdir()) == [] and not (project.parent / "escaped").exists()
    assert nothing_tokenized(project / "cache") and not (project / "runs").exists()


def test_a_symlink_and_dotdot_do_not_get_out(project: Path, outside: Path, capsys) -> None:
    (project / "link").symlink_to(outside, target_is_directory=True)
    assert lmforge("fit", "--config", "tiny.yaml", "--trainer.logger.init_args.save_dir", "link/../../x") == 2
    assert "trainer.logger.init_args.save_dir: 'link/../../x' resolves to" in capsys.readouterr().err


def test_a_symlink_the_user_made_is_followed(project: Path, outside: Path) -> None:
    from lmforge.cli.training import run_cli

    (project / "runs").symlink_to(outside, target_is_directory=True)  # e.g. runs/ on a bigger disk
    cli = run_cli(["--config", "tiny.yaml"], run=False)
    assert Path(cli.trainer.logger.log_dir).resolve() == outside / "tiny" / "version_0"


def test_the_command_line_flag_allows_it(project: Path, outside: Path) -> None:
    assert lmforge("fit", "--allow_outside_run_dir", "--config", "tiny.yaml", "--trainer.max_steps", "1",
                   "--trainer.logger.init_args.save_dir", str(outside)) == 0
    assert (outside / "tiny" / "version_0" / "metrics.csv").is_file()


def test_the_environment_allows_it(project: Path, outside: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lmforge.cli.training import run_cli

    monkeypatch.setenv("LMFORGE_ALLOW_OUTSIDE_WRITES", "1")
    cli = run_cli(["--config", "tiny.yaml", "--trainer.logger.init_args.save_dir", str(outside)], run=False)
    assert Path(cli.trainer.logger.save_dir) == outside


def test_a_recipe_cannot_grant_itself_the_permission(project: Path, capsys) -> None:
    (project / "sneaky.yaml").write_text("allow_outside_run_dir: true\ntrainer:\n  default_root_dir: /\n")
    assert lmforge("fit", "--config", "tiny.yaml", "--config", "sneaky.yaml") == 2
    assert "allow_outside_run_dir" in capsys.readouterr().err  # an unknown key, not a permission


@pytest.mark.parametrize(("path", "inside"), [
    ("runs", True), ("runs/a/../b", True), ("./runs", True), ("{root}/runs", True), ("{root}", True),
    ("..", False), ("../x", False), ("runs/../../x", False), ("/", False), ("~/runs", False),
])
def test_what_counts_as_inside(tmp_path: Path, path: str, inside: bool) -> None:
    root = tmp_path / "project"
    root.mkdir()
    assert is_inside(path.format(root=root), root) is inside
