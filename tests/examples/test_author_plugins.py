"""examples/lmforge-author-plugins, a package written from the docs, installed like any third-party package.

As in test_example_plugins.py, it is pip-installed once per session into a directory of its own, and
"installed" means that directory is on ``sys.path``. Its three plugins register, use only public names,
pass their own tests (the conformance kit) and train together with an lmforge checkpoint as the
distiller's teacher.
"""

from __future__ import annotations

import ast
import csv
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lmforge.cli.main import main
from lmforge.core.registry import ALLOW_ENV, AUTOLOAD_ENV, registry

PACKAGE = Path(__file__).resolve().parents[2] / "examples" / "lmforge-author-plugins"
DIST, VERSION = "lmforge-author-plugins", "0.1.0"
PLUGINS = {("regularizer", "ConfidencePenalty"), ("augmenter", "SpanCorruption"),
           ("distiller", "CosineHiddenDistillation")}
FAST = ["--trainer.max_steps", "3", "--trainer.val_check_interval", "3", "--trainer.limit_val_batches", "1",
        "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
        "--data.init_args.batch_size", "4", "--data.init_args.block_size", "32"]


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package, pip-installed into a directory of its own (built from a copy of its source)."""
    root = tmp_path_factory.mktemp("author")
    source = shutil.copytree(PACKAGE, root / "src", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    target = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True)
    return target


@pytest.fixture
def installed(site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.delenv(AUTOLOAD_ENV, raising=False)
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    monkeypatch.syspath_prepend(str(site))
    registry(refresh=True)
    yield site
    monkeypatch.undo()
    for module in [m for m in sys.modules if m.startswith("lmforge_author_plugins")]:
        del sys.modules[module]
    registry(refresh=True)


def test_the_three_plugins_register_with_the_distribution(installed, capsys):
    reg = registry()
    for kind, name in PLUGINS:
        info = reg.get(kind, name)
        assert (info.dist, info.version) == (DIST, VERSION), name
    assert main(["plugins", "show", "CosineHiddenDistillation"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"CosineHiddenDistillation  (distiller, from {DIST} {VERSION})")
    assert "teacher: str" in out and "requires: hidden_states" in out


def test_the_package_imports_only_public_names():
    for path in sorted((PACKAGE / "src").rglob("*.py")) + sorted((PACKAGE / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lmforge"):
                module = node.module or ""
                if module.startswith("lmforge_author_plugins"):
                    continue
                assert module.startswith(("lmforge.core.", "lmforge.testing")), f"{path.name}: {module}"
                assert not any(part.startswith("_") for part in module.split(".")), f"{path.name}: {module}"
                assert not any(alias.name.startswith("_") for alias in node.names), f"{path.name}: {module}"
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("lmforge.") and "._" in a.name for a in node.names), path.name


@pytest.mark.slow
def test_the_packages_own_tests_pass_the_kit(site):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", str(PACKAGE / "tests")],
                            cwd=PACKAGE, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout.splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary and "failed" not in summary, summary


@pytest.mark.slow
def test_a_short_fit_with_a_checkpoint_teacher(installed, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lmforge"])
    assert main(["fit", "--config", "quickstart", *FAST, "--data.init_args.tokenizer.train.vocab_size", "300"]) == 0
    teacher = tmp_path / "runs" / "quickstart" / "version_0" / "checkpoints" / "last.ckpt"
    assert teacher.is_file()
    overlay = PACKAGE / "recipes" / "distill-quickstart.yaml"
    assert main(["fit", "--config", "quickstart", "--config", str(overlay), *FAST]) == 0
    with open(tmp_path / "runs" / "quickstart" / "version_1" / "metrics.csv") as f:
        rows = [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(f)]
    steps = [r for r in rows if "loss/total" in r]
    assert len(steps) == 3
    for row in steps:
        terms = row["loss/causal_lm"] + row["loss/confidence_penalty"] + row["loss/cosine_hidden_distillation"]
        assert row["loss/total"] == pytest.approx(terms, rel=1e-5)
        assert row["loss/confidence_penalty"] == pytest.approx(-0.01 * row["metric/confidence_penalty/entropy"],
                                                               rel=1e-4)
        assert 0.0 < row["loss/cosine_hidden_distillation"] < 2.0  # 1 - cos lies in [0, 2]
