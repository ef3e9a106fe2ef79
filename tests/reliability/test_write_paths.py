"""A recipe writes under the working directory unless the user allows more on the command line.

Output paths (``trainer.default_root_dir``, a logger's ``save_dir``, a callback's ``dirpath``,
``data.init_args.cache_dir``) that resolve outside are refused before anything is read or written, naming
the key; so are the values joined onto them (a logger's ``name`` or ``version``, a checkpoint's or the
samples' ``filename``), checked after joining; a symlink the user made inside is followed;
``--allow_outside_run_dir`` or ``LMFORGE_ALLOW_OUTSIDE_WRITES=1`` allow them, and a recipe cannot grant
itself that.

A recipe is code: safe mode (``--safe``) refuses classes and functions outside lmforge, its plugins,
torch.optim and Lightning's callbacks, loggers and strategies, before any of them is imported.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
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
    # Values joined onto a directory: each escapes with "..".
    "trainer.logger.init_args.name": lambda out: ["--trainer.logger.init_args.name", f"../../{out.name}/escaped"],
    "trainer.logger.init_args.version": lambda out: ["--trainer.logger.init_args.version",
                                                     f"../../../{out.name}/escaped"],
    "trainer.callbacks[0].init_args.filename": lambda out: [
        "--trainer.callbacks", '[{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", '
                               f'"init_args": {{"filename": "../../../../../{out.name}/{{step}}"}}}}]'],
    "ValidationSamples.filename": lambda out: [
        "--trainer.callbacks", '[{"class_path": "lmforge.runtime.observe.ValidationSamples", '
                               f'"init_args": {{"filename": "../../../../{out.name}/samples.jsonl"}}}}]'],
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
    assert [p for p in project.parent.iterdir() if p.name == "escaped"] == []


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


def test_the_checkpoint_writer_is_the_last_guard(tmp_path: Path) -> None:
    """Whatever path a callback computes at run time, the checkpoint writer refuses one outside."""
    from lmforge.runtime.checkpoint_io import AtomicCheckpointIO
    from lmforge.runtime.run_paths import OutsideWriteError

    root = tmp_path / "project"
    root.mkdir()
    writer = AtomicCheckpointIO(write_root=root)
    with pytest.raises(OutsideWriteError, match="outside the run directory"):
        writer.save_checkpoint({"x": 1}, root / "runs" / ".." / ".." / "escaped.ckpt")
    assert not (tmp_path / "escaped.ckpt").exists()
    writer.save_checkpoint({"x": 1}, root / "runs" / "ok.ckpt")
    assert (root / "runs" / "ok.ckpt").is_file()


# -- a recipe is code: safe mode -----------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_safe_mode_left_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--safe`` sets LMFORGE_SAFE in this process (for the DDP processes it starts); undo it after each test."""
    monkeypatch.setenv("LMFORGE_SAFE", "")
    monkeypatch.delenv("LMFORGE_TRUSTED_CLASSES", raising=False)


MARKER_MODULE = "import pathlib\npathlib.Path('imported').write_text('yes')\ndef schedule(epoch):\n    return 1.0\n"


@pytest.fixture
def own_module(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``marker_schedule.py`` in the project, importable; importing it writes ``imported``."""
    (project / "marker_schedule.py").write_text(MARKER_MODULE)
    monkeypatch.syspath_prepend(str(project))
    (project / "lambda.yaml").write_text(
        "lr_scheduler:\n  class_path: torch.optim.lr_scheduler.LambdaLR\n"
        "  init_args: {lr_lambda: marker_schedule.schedule}\n")
    (project / "umask.yaml").write_text(
        "lr_scheduler:\n  class_path: torch.optim.lr_scheduler.LambdaLR\n  init_args: {lr_lambda: os.umask}\n")
    return project


@pytest.mark.parametrize("how", ["--safe", "LMFORGE_SAFE=1"])
def test_safe_mode_refuses_untrusted_callables_before_importing_them(how: str, own_module: Path, capsys,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    flag = [how] if how.startswith("--") else []
    if not flag:
        monkeypatch.setenv("LMFORGE_SAFE", "1")
    for recipe, name in (("lambda.yaml", "marker_schedule.schedule"), ("umask.yaml", "os.umask")):
        assert lmforge("fit", *flag, "--config", "tiny.yaml", "--config", recipe) == 2
        err = capsys.readouterr().err
        assert "safe mode: the recipe names code outside the trusted set" in err
        assert f"{recipe}: lr_scheduler.init_args.lr_lambda: {name}" in err and "LMFORGE_TRUSTED_CLASSES" in err
    assert not (own_module / "imported").exists()  # refused before the module was imported
    assert nothing_tokenized(own_module / "cache") and not (own_module / "runs").exists()


def test_without_safe_mode_a_recipe_runs_the_code_it_names(own_module: Path) -> None:
    """What the docs warn about: a recipe is code, like a Python script."""
    from lmforge.cli.training import run_cli

    run_cli(["--config", "tiny.yaml", "--config", "lambda.yaml"], run=False)
    assert (own_module / "imported").read_text() == "yes"


def test_the_runner_can_trust_more_and_short_names_resolve_to_trusted_classes(own_module: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from lmforge.cli import trust
    from lmforge.cli.training import run_cli

    monkeypatch.setenv("LMFORGE_TRUSTED_CLASSES", "marker_schedule")  # also turns safe mode on
    assert trust.safe_mode()
    trust.check_recipe_texts(["fit", "--config", "tiny.yaml", "--config", "lambda.yaml", "--optimizer", "AdamW"])
    cli = run_cli(["--config", "tiny.yaml", "--config", "lambda.yaml", "--optimizer", "AdamW"], run=False)
    assert cli.model.optimizer_init["class_path"] == "torch.optim.AdamW"
    monkeypatch.setenv("LMFORGE_TRUSTED_CLASSES", "marker_schedule.other")  # a name trusts only itself and below
    with pytest.raises(trust.UntrustedRecipe):
        trust.check_recipe_texts(["fit", "--config", "lambda.yaml"])


def test_every_bundled_recipe_passes_safe_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    from lmforge.cli import trust
    from lmforge.cli.recipes import bundled_recipes

    monkeypatch.setenv("LMFORGE_SAFE", "1")
    for name, path in bundled_recipes().items():
        trust.check_recipe_texts(["fit", "--config", str(path)])  # raises on anything untrusted
        trust.check_parsed(yaml.safe_load(path.read_text()) or {})


def test_safe_mode_keeps_remote_code_off_and_a_recipe_cannot_turn_it_off(project: Path, capsys,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    assert lmforge("fit", "--safe", "--config", "tiny.yaml", "--model.backbone.trust_remote_code", "true") == 2
    assert "model.backbone.trust_remote_code" in capsys.readouterr().err
    (project / "unsafe.yaml").write_text("safe: false\n")
    assert lmforge("fit", "--safe", "--config", "tiny.yaml", "--config", "unsafe.yaml") == 2
    assert "safe" in capsys.readouterr().err  # an unknown key, not a switch
    assert not (project / "runs").exists()


def test_the_help_says_a_recipe_is_code(capsys) -> None:
    from lmforge.cli.main import top_level_help

    text = top_level_help()
    assert "A recipe is code" in text and "--safe" in text
    assert lmforge("fit", "--help") == 0
    out = capsys.readouterr().out
    assert "A recipe is code" in " ".join(out.split()) and "--safe" in out
