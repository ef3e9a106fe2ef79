"""``lmforge plugins`` and ``lmforge --help`` answer without importing torch, and the cached listing
follows every change that could alter it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lmforge.cli import plugins as plugin_listing
from lmforge.core.registry import registry

PROBE = ("import sys\nfrom lmforge.cli.main import main\ncode = main({argv!r})\n"
         "print('HEAVY', sorted(m for m in ('torch', 'lightning', 'transformers') if m in sys.modules))\n")


def run_fresh(argv: list[str], cache: Path) -> tuple[str, list[str]]:
    """``lmforge ARGV`` in a new interpreter: its output and the heavy modules it imported."""
    env = {**os.environ, "LMFORGE_CACHE": str(cache)}
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], env=env, capture_output=True, text=True,
                         check=True).stdout
    body, _, heavy = out.rpartition("HEAVY ")
    return body, eval(heavy)  # a list literal printed by the probe


def test_help_lists_the_commands_without_lightning(tmp_path: Path) -> None:
    out, heavy = run_fresh(["--help"], tmp_path)
    assert heavy == []
    for command in ("fit", "validate", "test", "predict", "recipes", "plugins", "export", "plot", "bias-eval"):
        assert f"\n  {command} " in out


def test_the_second_listing_imports_nothing_heavy_and_prints_the_same(tmp_path: Path) -> None:
    first, heavy_first = run_fresh(["plugins"], tmp_path)
    second, heavy_second = run_fresh(["plugins"], tmp_path)
    assert "torch" in heavy_first  # the first listing imports every plugin to check it
    assert heavy_second == []
    assert second == first and "CausalLM" in first


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A third-party plugin package on sys.path, with a dist-info that declares one regularizer."""
    site = tmp_path / "site"
    (site / "fakereg").mkdir(parents=True)
    info = site / "fakereg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakereg\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[lmforge.regularizers]\nFakeReg = fakereg:FakeReg\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    yield site / "fakereg" / "__init__.py"
    monkeypatch.undo()
    for name in [m for m in sys.modules if m.startswith("fakereg")]:
        del sys.modules[name]
    registry(refresh=True)


def listed(kind: str = "regularizer") -> tuple[set[str], set[str]]:
    registry(refresh=True)  # what a new process would see
    rows = plugin_listing.listing()
    return ({p["name"] for p in rows["plugins"] if p["kind"] == kind},
            {b["name"] for b in rows["broken"] if b["kind"] == kind})


def test_an_edit_to_a_plugin_source_refreshes_the_listing(package: Path) -> None:
    package.write_text("class FakeReg:\n    'not a Regularizer'\n")
    ok, broken = listed()
    assert "FakeReg" in broken and "FakeReg" not in ok
    package.write_text(textwrap.dedent('''
        from lmforge.core.plugins import Regularizer


        class FakeReg(Regularizer):
            """A fixed regularizer."""
    '''))
    for name in [m for m in sys.modules if m.startswith("fakereg")]:
        del sys.modules[name]
    ok, broken = listed()
    assert "FakeReg" in ok and "FakeReg" not in broken


def test_uninstalling_a_package_refreshes_the_listing(package: Path) -> None:
    package.write_text("raise ImportError('fakereg needs a dependency')\n")
    _, broken = listed()
    assert "FakeReg" in broken
    for path in (package.parent.parent / "fakereg-1.0.dist-info").iterdir():
        path.unlink()
    (package.parent.parent / "fakereg-1.0.dist-info").rmdir()
    ok, broken = listed()
    assert "FakeReg" not in ok | broken


def test_an_unchanged_environment_reads_the_cache(package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package.write_text("class FakeReg:\n    pass\n")
    listed()
    monkeypatch.setattr(plugin_listing, "checked_listing", lambda: pytest.fail("checked again"))
    listed()  # same fingerprint: no import, no check
    assert plugin_listing.listing(refresh=False)["broken"]
