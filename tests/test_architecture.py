"""The dependency rule of docs/architecture.md, checked by import-linter (contracts in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_import_contracts_hold() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if lint is None:
        pytest.fail("lint-imports is not installed: `pip install -e .[dev]` installs import-linter")
    result = subprocess.run([lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_the_contracts_catch_a_core_module_that_imports_the_cli(tmp_path: Path) -> None:
    """The layer contract is not vacuous: a core module importing lmforge.cli breaks it."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if lint is None:
        pytest.fail("lint-imports is not installed")
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "lmforge", copy / "lmforge", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    with open(copy / "lmforge" / "core" / "schedules.py", "a", encoding="utf-8") as f:
        f.write("\n\ndef _layer_breach() -> None:\n    from lmforge.cli import commands  # noqa: F401\n")
    result = subprocess.run([lint, "--no-cache"], cwd=copy, capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"})
    assert result.returncode != 0
    assert "lmforge.core.schedules -> lmforge.cli.commands" in result.stdout
