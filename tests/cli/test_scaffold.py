"""``lmforge plugins new``: the package it writes (or the plugin it adds to a package with ``--into``)
installs, registers, passes its own tests as written and fails them, with a message that names the broken
hook, once a hook is broken."""

from __future__ import annotations

import difflib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from packaging.version import Version

from lmforge import __version__
from lmforge.cli.main import main
from lmforge.cli.scaffold import ScaffoldError, add_entry_point, add_to_package, lmforge_requirement, write_package
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
    this = Version(__version__)  # before 1.0 a minor release may change the plugin contract
    assert project["dependencies"] == [f"lmforge>={this.major}.{this.minor},<{this.major}.{this.minor + 1}"]
    assert project["entry-points"][GROUPS[kind]] == {"ZetaThing": "lmforge_zeta_thing.zeta_thing:ZetaThing"}
    source = (root / "src" / "lmforge_zeta_thing" / "zeta_thing.py").read_text()
    compile(source, "zeta_thing.py", "exec")
    assert "$" not in source and "class ZetaThing(" in source
    tests = (root / "tests" / "test_zeta_thing.py").read_text()
    assert "def test_keeps_the_plugin_contract(lmforge_kit):\n    lmforge_kit.check(ZetaThing" in tests
    assert "check_plugin" not in tests and "$" not in tests
    assert "from lmforge_zeta_thing.zeta_thing import ZetaThing" in tests
    assert "class_path: ZetaThing" in (root / "README.md").read_text()
    # Only public names: no `_private` import, nothing from lmforge outside lmforge.core and lmforge.testing.
    for text in (source, tests):
        for module, imported in re.findall(r"^from (lmforge(?:\.[\w.]+)?) import (.+)$", text, re.MULTILINE):
            assert module.startswith(("lmforge.core", "lmforge.testing")), module
            assert not any(n.strip().startswith("_") for n in imported.split(",")), imported


def test_dist_names_the_distribution_and_the_import_package(tmp_path):
    root = write_package("regularizer", "ConfPen", tmp_path / "pkg", dist="Acme.LM-plugins")
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["name"] == "Acme.LM-plugins"
    assert project["entry-points"]["lmforge.regularizers"] == {"ConfPen": "acme_lm_plugins.conf_pen:ConfPen"}
    assert (root / "src" / "acme_lm_plugins" / "conf_pen.py").is_file()
    assert "from acme_lm_plugins.conf_pen import ConfPen" in (root / "tests" / "test_conf_pen.py").read_text()
    assert (root / "README.md").read_text().startswith("# Acme.LM-plugins\n")
    for bad, message in (("-x", "must be a distribution name"), ("3d-plugins", "not a Python identifier")):
        with pytest.raises(ScaffoldError, match=message):
            write_package("regularizer", "ConfPen", tmp_path / bad, dist=bad)


def test_into_adds_a_plugin_to_a_scaffolded_package(tmp_path):
    root = write_package("regularizer", "ConfPen", tmp_path / "pkg", dist="lmforge-my-plugins")
    before = (root / "pyproject.toml").read_text()
    changed = add_to_package("augmenter", "SpanMask", root)
    add_to_package("regularizer", "OtherPen", root)
    package = root / "src" / "lmforge_my_plugins"
    assert changed == [package / "span_mask.py", root / "tests" / "test_span_mask.py", root / "pyproject.toml",
                       package / "__init__.py"]
    after = (root / "pyproject.toml").read_text()
    assert tomllib.loads(after)["project"]["entry-points"] == {
        "lmforge.regularizers": {"ConfPen": "lmforge_my_plugins.conf_pen:ConfPen",
                                 "OtherPen": "lmforge_my_plugins.other_pen:OtherPen"},
        "lmforge.augmenters": {"SpanMask": "lmforge_my_plugins.span_mask:SpanMask"}}
    assert sorted(_inserted(before, after)) == sorted(["", '[project.entry-points."lmforge.augmenters"]',
                                                       'SpanMask = "lmforge_my_plugins.span_mask:SpanMask"',
                                                       'OtherPen = "lmforge_my_plugins.other_pen:OtherPen"'])
    init = (package / "__init__.py").read_text()
    assert "from lmforge_my_plugins.span_mask import SpanMask\n" in init
    assert '__all__ = ["ConfPen", "OtherPen", "SpanMask"]\n' in init
    compile(init, "__init__.py", "exec")
    with pytest.raises(ScaffoldError, match="SpanMask is already an entry point of 'lmforge.augmenters'"):
        add_to_package("augmenter", "SpanMask", root)


def test_into_adds_a_plugin_to_a_package_written_by_hand(tmp_path):
    root = tmp_path / "handmade"
    (root / "handmade_plugins").mkdir(parents=True)
    (root / "handmade_plugins" / "__init__.py").write_text('"""Mine."""\n')
    pyproject = (
        "[project]\n"
        'name = "handmade"  # not the import name\n'
        "dependencies = [\n"
        '    "lmforge>=0.1",\n'
        "]\n"
        "\n"
        "[project.entry-points.'lmforge.regularizers']   # single quotes and a comment\n"
        'Old = "handmade_plugins.old:Old"\n'
        "\n"
        "# the tool's settings\n"
        "[tool.ruff]\n"
        "line-length = 120"  # no newline at the end
    )
    (root / "pyproject.toml").write_text(pyproject)
    add_to_package("regularizer", "NewPen", root)
    add_to_package("distiller", "NewDistiller", root)
    text = (root / "pyproject.toml").read_text()
    assert tomllib.loads(text)["project"]["entry-points"] == {
        "lmforge.regularizers": {"Old": "handmade_plugins.old:Old", "NewPen": "handmade_plugins.new_pen:NewPen"},
        "lmforge.distillers": {"NewDistiller": "handmade_plugins.new_distiller:NewDistiller"}}
    assert tomllib.loads(text)["tool"] == {"ruff": {"line-length": 120}}
    assert sorted(_inserted(pyproject, text)) == sorted([
        'NewPen = "handmade_plugins.new_pen:NewPen"', "", '[project.entry-points."lmforge.distillers"]',
        'NewDistiller = "handmade_plugins.new_distiller:NewDistiller"'])
    assert text.index("NewDistiller") < text.index("# the tool's settings")  # beside the other entry points
    assert (root / "handmade_plugins" / "new_pen.py").is_file() and (root / "tests" / "test_new_pen.py").is_file()
    assert (root / "handmade_plugins" / "__init__.py").read_text() == '"""Mine."""\n'  # no __all__: left alone


def test_into_refuses_what_it_cannot_do_cleanly(tmp_path):
    with pytest.raises(ScaffoldError, match="has none. Make a new package without --into"):
        add_to_package("regularizer", "NewPen", tmp_path)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "lost"\n')
    with pytest.raises(ScaffoldError, match=r"cannot find the package's import package \(looked for "
                                            r"src/lost/__init__.py or lost/__init__.py\)"):
        add_to_package("regularizer", "NewPen", tmp_path)
    inline = '[project]\nname = "x"\n[project.entry-points]\n"lmforge.regularizers" = {Old = "x.old:Old"}\n'
    with pytest.raises(ScaffoldError, match="in a form other than a .* table; add NewPen = .* by hand"):
        add_entry_point(inline, "lmforge.regularizers", "NewPen", "x.new_pen:NewPen")
    root = write_package("regularizer", "ConfPen", tmp_path / "pkg")
    (root / "tests" / "test_span_mask.py").write_text("# mine\n")
    with pytest.raises(ScaffoldError, match="test_span_mask.py exists; choose another NAME"):
        add_to_package("augmenter", "SpanMask", root)
    assert "SpanMask" not in (root / "pyproject.toml").read_text()  # nothing written when refused


def _inserted(before: str, after: str) -> list[str]:
    """The lines ``after`` adds to ``before``, which must keep every line of ``before``, in order."""
    matcher = difflib.SequenceMatcher(a=before.splitlines(), b=after.splitlines(), autojunk=False)
    opcodes = matcher.get_opcodes()
    assert {op for op, *_ in opcodes} <= {"equal", "insert"}, opcodes
    return [line for op, _, _, j1, j2 in opcodes if op == "insert" for line in after.splitlines()[j1:j2]]


def test_the_command_refuses_bad_names_kinds_and_directories(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file").write_text("x")
    assert main(["plugins", "new", "regularizer", "zloss", "--dir", str(tmp_path / "a")]) == 2
    assert "NAME must be a Python class name in CamelCase" in capsys.readouterr().err
    assert main(["plugins", "new", "regularizer", "RDrop", "--dir", str(tmp_path / "b")]) == 2
    assert f"regularizer 'RDrop' already exists (lmforge {__version__})" in capsys.readouterr().err
    assert main(["plugins", "new", "regularizer", "Fine", "--dir", str(tmp_path / "full")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    with pytest.raises(ScaffoldError, match="KIND must be one of"):
        write_package("optimizer", "Fine", tmp_path / "c")
    assert main(["plugins", "new", "augmenter", "Fine", "--dir", str(tmp_path / "d")]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / 'd'}\n")
    assert main(["plugins", "new", "regularizer", "Finer", "--dir", str(tmp_path / "d")]) == 2
    assert "give --dir a new or empty directory, or add the plugin to the package there with --into" in \
        capsys.readouterr().err
    assert main(["plugins", "new", "regularizer", "Finer", "--into", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"added Finer to {tmp_path / 'd'}:\n") and "reinstall" in out
    with pytest.raises(SystemExit):
        main(["plugins", "new", "regularizer", "Finest", "--into", str(tmp_path / "d"), "--dist", "x"])
    assert "--dist names a new package" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["plugins", "new", "regularizer", "Finest", "--into", str(tmp_path / "d"), "--dir", str(tmp_path)])
    assert "not allowed with argument" in capsys.readouterr().err


def _run(args: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_generate_add_install_pass_break_a_hook_fail(tmp_path, monkeypatch, capsys):
    package = tmp_path / "pkg"
    assert main(["plugins", "new", "regularizer", "ScaffoldPenalty", "--dir", str(package),
                 "--dist", "scaffold-plugins"]) == 0
    assert main(["plugins", "new", "distiller", "ScaffoldDistiller", "--into", str(package)]) == 0
    assert main(["plugins", "new", "augmenter", "ScaffoldRepeat", "--into", str(package)]) == 0
    site = tmp_path / "site"  # pip-installed into a directory of its own; on sys.path = installed
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(site), str(package)], check=True, capture_output=True)
    with monkeypatch.context() as mp:
        mp.syspath_prepend(str(site))
        registry(refresh=True)
        capsys.readouterr()
        assert main(["plugins"]) == 0
        rows = {tuple(line.split()[:4]) for line in capsys.readouterr().out.splitlines()}
        assert {("regularizer", "ScaffoldPenalty", "scaffold-plugins", "0.1.0"),
                ("distiller", "ScaffoldDistiller", "scaffold-plugins", "0.1.0"),
                ("augmenter", "ScaffoldRepeat", "scaffold-plugins", "0.1.0")} <= rows
    for module in [m for m in sys.modules if m.startswith("scaffold_plugins")]:
        del sys.modules[module]
    registry(refresh=True)

    tests = ["-m", "pytest", "-q", "-p", "no:cacheprovider"]
    passed = _run([*tests, "tests"], site, package)
    assert passed.returncode == 0, passed.stdout[-3000:] + passed.stderr[-3000:]
    assert passed.stdout.splitlines()[-1].startswith("13 passed")  # 4 + 4 + 5: the checkpoint teacher's too

    installed = site / "scaffold_plugins" / "scaffold_penalty.py"
    source = installed.read_text()
    hook = "        return self.weight * scaffold_penalty_penalty(logits)\n"
    assert hook in source
    installed.write_text(source.replace(hook, hook.rstrip("\n") + ' * float("nan")\n'))
    failed = _run([*tests, "tests/test_scaffold_penalty.py"], site, package)
    assert failed.returncode == 1
    assert "ConformanceError: ScaffoldPenalty on causal_lm: loss/scaffold_penalty = nan is not finite" in failed.stdout
    # The contract test and the loss's reference test fail; the pure function's reference test still passes.
    assert failed.stdout.splitlines()[-1].startswith("2 failed, 2 passed")
    assert "FAILED tests/test_scaffold_penalty.py::test_keeps_the_plugin_contract" in failed.stdout
