"""examples/lmforge-example-plugins, installed like any third-party package.

The package is built and installed once per session with pip (``--target`` a temporary directory, so
the test environment itself is not modified); "installed" then means that directory is on ``sys.path``,
which is all ``importlib.metadata`` and the registry look at, and "uninstalled" means it is not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lmforge.cli.main import main
from lmforge.core.registry import ALLOW_ENV, AUTOLOAD_ENV, registry

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lmforge-example-plugins"
DIST, VERSION = "lmforge-example-plugins", "0.1.0"
FAST = ["--trainer.max_steps", "3", "--trainer.val_check_interval", "3", "--trainer.limit_val_batches", "1",
        "--trainer.log_every_n_steps", "1",
        "--trainer.enable_progress_bar", "false", "--data.init_args.batch_size", "4",
        "--data.init_args.block_size", "32", "--data.init_args.tokenizer.train.vocab_size", "300"]


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package, pip-installed into a directory of its own (built from a copy of its source)."""
    root = tmp_path_factory.mktemp("example")
    source = shutil.copytree(EXAMPLE, root / "src", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    target = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True)
    return target


def _forget_example_modules() -> None:
    for module in [m for m in sys.modules if m.startswith("lmforge_example_plugins")]:
        del sys.modules[module]


@pytest.fixture
def installed(site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.delenv(AUTOLOAD_ENV, raising=False)
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    monkeypatch.syspath_prepend(str(site))
    registry(refresh=True)
    yield site
    monkeypatch.undo()
    _forget_example_modules()
    registry(refresh=True)


def test_installed_plugins_register_with_the_distribution_and_version(installed, capsys):
    reg = registry()
    zloss, dropout = reg.get("regularizer", "ZLoss"), reg.get("augmenter", "WordDropout")
    assert (zloss.dist, zloss.version, zloss.qualname) == (DIST, VERSION, "lmforge_example_plugins.z_loss.ZLoss")
    assert (dropout.dist, dropout.version) == (DIST, VERSION)
    assert str(Path(sys.modules["lmforge_example_plugins"].__file__).parent.parent) == str(installed)

    assert main(["plugins", "--kind", "regularizer"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("regularizer  ZLoss "))
    assert row.split()[2:4] == [DIST, VERSION] and "PaLM's z-loss" in row
    assert "objectives: causal_lm, masked_lm" in out

    assert main(["plugins", "show", "WordDropout"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"WordDropout  (augmenter, from {DIST} {VERSION})")
    assert "runs after: SynonymReplacement" in out and "p: float = 0.1" in out


@pytest.mark.slow
def test_the_overlay_recipe_trains_with_them_and_the_run_records_them(installed, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lmforge"])
    overlay = EXAMPLE / "recipes" / "zloss.yaml"
    assert main(["fit", "--config", "quickstart", "--config", str(overlay), *FAST]) == 0
    run = tmp_path / "runs" / "quickstart" / "version_0"
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "loss/z_loss" in header
    record = yaml.safe_load((run / "hparams.yaml").read_text())
    assert record["plugins"]["regularizer"] == [{"name": "ZLoss", "class": "lmforge_example_plugins.z_loss.ZLoss",
                                                 "distribution": DIST, "version": VERSION}]
    assert record["plugins"]["augmenter"][0]["distribution"] == DIST
    assert f"regularizer:ZLoss {DIST}=={VERSION}" in record["installed_plugins"]
    saved = yaml.safe_load((run / "config.yaml").read_text())["model"]["regularizers"][0]["class_path"]
    assert saved == "lmforge_example_plugins.ZLoss"  # what test_uninstalling_removes_them re-runs


def test_a_nonfinite_term_names_the_distribution(installed):
    from lmforge.core.backbone import Backbone
    from lmforge.core.module import LanguageModel, NonFiniteLossError

    zloss = registry().get("regularizer", "ZLoss").cls(weight=float("inf"))
    model = LanguageModel(Backbone("gpt2"), registry().get("objective", "CausalLM").cls(), regularizers=[zloss])
    with pytest.raises(NonFiniteLossError, match=rf"loss/z_loss = inf from ZLoss \(model.regularizers\[0\]; from "
                                                 rf"{DIST} {VERSION}\)"):
        model._skip_or_stop(0, {"causal_lm": 2.0, "z_loss": float("inf")})


def test_the_plugins_flag_keeps_only_the_named_ones(installed, capsys, monkeypatch):
    monkeypatch.setenv(AUTOLOAD_ENV, "0")  # main() sets both; monkeypatch restores them
    monkeypatch.setenv(ALLOW_ENV, "")
    assert main(["--plugins", "ZLoss", "plugins"]) == 0
    out = capsys.readouterr().out
    assert "ZLoss" in out and "WordDropout" not in out
    assert "WordDropout" not in registry().names("augmenter")


@pytest.mark.filterwarnings("ignore:.*Hit failing import")  # jsonargparse, looking for the uninstalled ZLoss
def test_uninstalling_removes_them(site, tmp_path, monkeypatch, capsys):
    with monkeypatch.context() as mp:
        mp.syspath_prepend(str(site))
        assert "ZLoss" in registry(refresh=True).names("regularizer")
    _forget_example_modules()
    reg = registry(refresh=True)
    assert "ZLoss" not in reg.names("regularizer") and "WordDropout" not in reg.names("augmenter")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lmforge"])
    with pytest.raises(SystemExit):
        main(["fit", "--config", "quickstart", "--config", str(EXAMPLE / "recipes" / "zloss.yaml"), *FAST])
    assert "model.regularizers: unknown regularizer 'ZLoss'. Installed regularizers: Dropout" in capsys.readouterr().err
    saved = tmp_path / "config.yaml"  # a run's record names the plugin by its import path
    saved.write_text("model:\n  regularizers:\n    - class_path: lmforge_example_plugins.ZLoss\n")
    with pytest.raises(SystemExit):
        main(["fit", "--config", "quickstart", "--config", str(saved), *FAST])
    err = capsys.readouterr().err
    assert "model.regularizers: unknown regularizer 'ZLoss'. Installed regularizers: Dropout" in err
    assert "No module named 'lmforge_example_plugins'.)" in err and "Given value" not in err


@pytest.mark.slow
def test_the_packages_own_tests_pass(site):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", str(EXAMPLE / "tests")],
                            cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout.splitlines()[-1]
