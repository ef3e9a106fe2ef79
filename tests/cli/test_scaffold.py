"""``lmforge plugins new``: the package it writes installs, registers, passes its own tests as written and
fails them, with a message that names the broken hook, once a hook is broken."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from lmforge.cli.main import main
from lmforge.cli.scaffold import ScaffoldError, lmforge_requirement, write_package
from lmforge.core.registry import GROUPS, registry


@pytest.mark.parametrize(("version", "requirement"), [
    ("0.1.0", "lmforge>=0.1,<0.2"), ("0.3.2.dev1", "lmforge>=0.3,<0.4"), ("1.4.0", "lmforge>=1.4,<2"),
])
def test_the_supported_range_is_the_releases_that_keep_this_plugin_contract(version, requirement):
    assert lmforge_requirement(version) == requirement


@pytest.mark.parametrize("kind", sorted(GROUPS))
def test_a_package_of_each_kind_is_written_with_its_entry_point(kind, tmp_path):
    root = write_package(kind, "ZetaThing", tmp_path / "pkg")
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
        ".gitignore", "README.md", "pyproject.toml", "src/lmforge_zeta_thing/__init__.py",
        "src/lmforge_zeta_thing/zeta_thing.py", "tests/test_zeta_thing.py"]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["name"] == "lmforge-zeta-thing"
    assert project["dependencies"] == ["lmforge>=0.1,<0.2"]
    assert project["entry-points"][GROUPS[kind]] == {"ZetaThing": "lmforge_zeta_thing.zeta_thing:ZetaThing"}
    source = (root / "src" / "lmforge_zeta_thing" / "zeta_thing.py").read_text()
    compile(source, "zeta_thing.py", "exec")
    assert "$" not in source and "class ZetaThing(" in source
    assert "from lmforge.testing import" in (root / "tests" / "test_zeta_thing.py").read_text()
    assert "class_path: ZetaThing" in (root / "README.md").read_text()


def test_the_command_refuses_bad_names_kinds_and_directories(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file").write_text("x")
    assert main(["plugins", "new", "regularizer", "zloss", "--dir", str(tmp_path / "a")]) == 2
    assert "NAME must be a Python class name in CamelCase" in capsys.readouterr().err
    assert main(["plugins", "new", "regularizer", "RDrop", "--dir", str(tmp_path / "b")]) == 2
    assert "regularizer 'RDrop' already exists (lmforge 0.1.0)" in capsys.readouterr().err
    assert main(["plugins", "new", "regularizer", "Fine", "--dir", str(tmp_path / "full")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    with pytest.raises(ScaffoldError, match="KIND must be one of"):
        write_package("optimizer", "Fine", tmp_path / "c")
    assert main(["plugins", "new", "augmenter", "Fine", "--dir", str(tmp_path / "d")]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / 'd'}\n")


def _run(args: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_generate_install_pass_break_a_hook_fail(tmp_path, monkeypatch, capsys):
    package = tmp_path / "pkg"
    assert main(["plugins", "new", "regularizer", "ScaffoldPenalty", "--dir", str(package)]) == 0
    site = tmp_path / "site"  # pip-installed into a directory of its own; on sys.path = installed
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(site), str(package)], check=True, capture_output=True)
    with monkeypatch.context() as mp:
        mp.syspath_prepend(str(site))
        registry(refresh=True)
        capsys.readouterr()
        assert main(["plugins", "--kind", "regularizer"]) == 0
        assert any(line.split()[1:4] == ["ScaffoldPenalty", "lmforge-scaffold-penalty", "0.1.0"]
                   for line in capsys.readouterr().out.splitlines())
    sys.modules.pop("lmforge_scaffold_penalty.scaffold_penalty", None)
    sys.modules.pop("lmforge_scaffold_penalty", None)
    registry(refresh=True)

    tests = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]
    passed = _run(tests, site, package)
    assert passed.returncode == 0, passed.stdout[-3000:] + passed.stderr[-3000:]

    installed = site / "lmforge_scaffold_penalty" / "scaffold_penalty.py"
    source = installed.read_text()
    hook = "        return self.weight * scaffold_penalty_penalty(logits)\n"
    assert hook in source
    installed.write_text(source.replace(hook, hook.rstrip("\n") + ' * float("nan")\n'))
    failed = _run(tests, site, package)
    assert failed.returncode == 1
    assert "ConformanceError: ScaffoldPenalty on causal_lm: loss/scaffold_penalty = nan is not finite" in failed.stdout
    # The contract test and the loss's reference test fail; the pure function's reference test still passes.
    assert failed.stdout.splitlines()[-1].startswith("2 failed, 2 passed")
    assert "FAILED tests/test_scaffold_penalty.py::test_keeps_the_plugin_contract" in failed.stdout
