"""lmforge.core.registry: plugins come from entry points and are validated when they register.

Each test installs a throw-away distribution (a ``*.dist-info`` directory plus a
module) into ``tmp_path``, puts it on ``sys.path`` and reloads the registry.
"""

from __future__ import annotations

import gc
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from packaging.version import Version

from lmforge import __version__
from lmforge.core.registry import ALLOW_ENV, AUTOLOAD_ENV, registry

PLUGIN_MODULE = '''
from lmforge.core.plugins import Objective, Regularizer


class FakeL3Penalty(Regularizer):
    """An L3 penalty that only exists in tests.

    Second line of the docstring.
    """


class NotAPlugin:
    """Subclasses nothing lmforge knows."""


class CausalLM(Objective):
    """A third-party objective that wants a built-in's name."""
'''


def _write_dist(root: Path, name: str, version: str, entry_points: str) -> None:
    info = root / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def install(tmp_path: Path) -> Iterator[Callable[..., None]]:
    """``install(name, version, entry_points, **modules)`` makes a distribution importable.

    On teardown sys.path, the environment and sys.modules are restored *before*
    the registry is reloaded, so later tests see only the real plugins.
    """
    names: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(AUTOLOAD_ENV, raising=False)
        mp.delenv(ALLOW_ENV, raising=False)
        mp.syspath_prepend(str(tmp_path))

        def _install(name: str, version: str, entry_points: str, **modules: str) -> None:
            _write_dist(tmp_path, name, version, entry_points)
            for module, source in modules.items():
                (tmp_path / f"{module}.py").write_text(source)
                names.append(module)

        _install.monkeypatch = mp  # type: ignore[attr-defined]
        yield _install
        for module in names:
            sys.modules.pop(module, None)
    # The fake classes sit in reference cycles: collect them now, or jsonargparse (which finds classes by
    # short name through __subclasses__) may still see a fake CausalLM in a later test, depending on GC timing.
    gc.collect()
    registry(refresh=True)


def _broken(name: str) -> list:
    return [b for b in registry().broken if b.name == name]


def test_builtin_objectives_come_from_lmforge() -> None:
    reg = registry(refresh=True)
    for name in ("CausalLM", "MaskedLM"):
        info = reg.get("objective", name)
        assert info.dist == "lmforge"
        assert info.cls.__name__ == name
        assert info.cls.__module__.startswith("lmforge.plugins.objectives.")


def test_good_plugin_registers_with_its_distribution(install: Callable[..., None]) -> None:
    install("fakeplug", "1.2.3", """
        [lmforge.regularizers]
        FakeL3Penalty = fakeplug_mod:FakeL3Penalty
        """, fakeplug_mod=PLUGIN_MODULE)
    info = registry(refresh=True).get("regularizer", "FakeL3Penalty")
    assert (info.dist, info.version) == ("fakeplug", "1.2.3")
    assert info.summary == "An L3 penalty that only exists in tests."
    assert info.qualname == "fakeplug_mod.FakeL3Penalty"
    assert info.error is None
    assert "FakeL3Penalty" in registry().names("regularizer")


@pytest.mark.parametrize(("module", "target", "error"), [
    ("fakeplug_boom", "fakeplug_boom:Whatever", "ImportError: no compiled extension here"),
    ("fakeplug_mod", "fakeplug_mod:Missing", "AttributeError"),
])
def test_entry_point_that_fails_to_load_is_broken_and_others_still_load(
        install: Callable[..., None], module: str, target: str, error: str) -> None:
    install("fakeplug", "1.2.3", f"""
        [lmforge.regularizers]
        FakeL3Penalty = fakeplug_mod:FakeL3Penalty
        Missing = {target}
        """, fakeplug_mod=PLUGIN_MODULE, fakeplug_boom='raise ImportError("no compiled extension here")\n')
    reg = registry(refresh=True)
    [bad] = _broken("Missing")
    assert (bad.kind, bad.dist, bad.version, bad.cls) == ("regularizer", "fakeplug", "1.2.3", None)
    assert "import failed" in bad.error and error in bad.error
    assert "Missing" not in reg.names("regularizer")
    assert reg.get("regularizer", "FakeL3Penalty").dist == "fakeplug"
    assert {"CausalLM", "MaskedLM"} <= set(reg.names("objective"))


def test_class_of_the_wrong_kind_is_broken(install: Callable[..., None]) -> None:
    install("fakeplug", "1.2.3", """
        [lmforge.regularizers]
        NotAPlugin = fakeplug_mod:NotAPlugin
        [lmforge.augmenters]
        FakeL3Penalty = fakeplug_mod:FakeL3Penalty
        """, fakeplug_mod=PLUGIN_MODULE)
    reg = registry(refresh=True)
    errors = {b.kind: b.error for b in reg.broken if b.dist == "fakeplug"}
    assert "not a subclass of lmforge.core.plugins.Regularizer" in errors["regularizer"]
    # A Regularizer is not an Augmenter, even though both are plugins.
    assert "not a subclass of lmforge.core.plugins.Augmenter" in errors["augmenter"]
    assert "FakeL3Penalty" not in reg.names("augmenter")
    assert "NotAPlugin" not in reg.names("regularizer")


def test_entry_point_name_must_equal_class_name(install: Callable[..., None]) -> None:
    install("fakeplug", "1.2.3", """
        [lmforge.regularizers]
        L3 = fakeplug_mod:FakeL3Penalty
        """, fakeplug_mod=PLUGIN_MODULE)
    reg = registry(refresh=True)
    [bad] = _broken("L3")
    assert "'L3'" in bad.error and "'FakeL3Penalty'" in bad.error
    assert "L3" not in reg.names("regularizer") and "FakeL3Penalty" not in reg.names("regularizer")


def test_name_claimed_by_two_distributions_is_refused_for_both(install: Callable[..., None]) -> None:
    group = """
        [lmforge.regularizers]
        FakeL3Penalty = fakeplug_mod:FakeL3Penalty
        """
    install("fakeplug", "1.2.3", group, fakeplug_mod=PLUGIN_MODULE)
    install("otherplug", "0.1", group)
    reg = registry(refresh=True)
    assert "FakeL3Penalty" not in reg.names("regularizer")
    broken = _broken("FakeL3Penalty")
    assert sorted(b.dist for b in broken) == ["fakeplug", "otherplug"]
    for b in broken:
        assert "duplicate name" in b.error and "fakeplug" in b.error and "otherplug" in b.error


def test_builtin_keeps_its_name_against_a_third_party_duplicate(install: Callable[..., None]) -> None:
    install("fakeplug", "1.2.3", """
        [lmforge.objectives]
        CausalLM = fakeplug_mod:CausalLM
        """, fakeplug_mod=PLUGIN_MODULE)
    reg = registry(refresh=True)
    assert reg.get("objective", "CausalLM").dist == "lmforge"
    assert reg.get("objective", "CausalLM").cls.__module__ == "lmforge.plugins.objectives.causal_lm"
    [bad] = _broken("CausalLM")
    assert bad.dist == "fakeplug"
    assert "duplicate name 'CausalLM'" in bad.error and "lmforge" in bad.error and "fakeplug" in bad.error


def test_disable_autoload_hides_third_party_unless_allowed(install: Callable[..., None]) -> None:
    install("fakeplug", "1.2.3", """
        [lmforge.regularizers]
        FakeL3Penalty = fakeplug_mod:FakeL3Penalty
        """, fakeplug_mod=PLUGIN_MODULE)
    mp: pytest.MonkeyPatch = install.monkeypatch  # type: ignore[attr-defined]
    mp.setenv(AUTOLOAD_ENV, "1")
    reg = registry(refresh=True)
    assert "FakeL3Penalty" not in reg.names("regularizer")
    assert not _broken("FakeL3Penalty")
    assert {"CausalLM", "MaskedLM"} <= set(reg.names("objective"))  # built-ins always load

    mp.setenv(ALLOW_ENV, "SomethingElse, FakeL3Penalty")
    assert registry(refresh=True).get("regularizer", "FakeL3Penalty").dist == "fakeplug"


def test_unknown_name_lists_installed_plugins_of_that_kind(install: Callable[..., None]) -> None:
    install("fakeplug", "1.2.3", """
        [lmforge.regularizers]
        FakeL3Penalty = fakeplug_mod:FakeL3Penalty
        """, fakeplug_mod=PLUGIN_MODULE)
    reg = registry(refresh=True)
    with pytest.raises(KeyError) as excinfo:
        reg.get("regularizer", "L4Penalty")
    message = str(excinfo.value)
    assert "'L4Penalty'" in message and "regularizer" in message and "FakeL3Penalty" in message
    assert "CausalLM" not in message  # other kinds are not listed
    with pytest.raises(KeyError, match="CausalLM, MaskedLM"):
        reg.get("objective", "Causal")


def _write_requirement(root: Path, name: str, version: str, requirement: str) -> None:
    metadata_file = root / f"{name}-{version}.dist-info" / "METADATA"
    metadata_file.write_text(metadata_file.read_text() + f"Requires-Dist: {requirement}\n")


_RELEASE = Version(__version__)
#: The installed lmforge's minor release and the next one (``0.2`` and ``0.3`` for lmforge 0.2.0).
THIS, NEXT = f"{_RELEASE.major}.{_RELEASE.minor}", f"{_RELEASE.major}.{_RELEASE.minor + 1}"


@pytest.mark.parametrize(("requirement", "refused"), [
    (f"lmforge>={THIS},<{NEXT}", None),
    ("lmforge", None),
    (f"LMForge>={NEXT}", f">={NEXT}"),
    (f"lmforge<{THIS}", f"<{THIS}"),
    ('lmforge>=9; extra == "dev"', None),  # an optional extra's requirement does not count
    ("torch>=1.0", None),
])
def test_a_distribution_for_another_lmforge_version_is_broken_naming_both_versions(
        install: Callable[..., None], tmp_path: Path, requirement: str, refused: str | None) -> None:
    install("fakeplug", "1.2.3", """
        [lmforge.regularizers]
        FakeL3Penalty = fakeplug_mod:FakeL3Penalty
        """, fakeplug_mod=PLUGIN_MODULE)
    _write_requirement(tmp_path, "fakeplug", "1.2.3", requirement)
    sys.modules.pop("fakeplug_mod", None)
    reg = registry(refresh=True)
    assert ("FakeL3Penalty" in reg.names("regularizer")) is (refused is None)
    if refused is not None:
        [bad] = _broken("FakeL3Penalty")
        assert bad.error == (f"requires lmforge{refused} but lmforge {__version__} is installed. Install a release "
                             f"of fakeplug that supports lmforge {__version__} (`pip install -U fakeplug`), or "
                             f"lmforge{refused}")
        assert "fakeplug_mod" not in sys.modules  # not even imported


def test_malformed_metadata_makes_a_plugin_broken(install: Callable[..., None]) -> None:
    install("fakeplug", "1.2.3", """
        [lmforge.regularizers]
        Sloppy = fakeplug_sloppy:Sloppy
        """, fakeplug_sloppy='from lmforge.core.plugins import Regularizer\n\n\nclass Sloppy(Regularizer):\n'
                             '    supported_objectives = "CausalLM"\n')
    reg = registry(refresh=True)
    [bad] = _broken("Sloppy")
    assert bad.error == ("metadata: supported_objectives must be None or a tuple of objective names or tasks, got "
                         "'CausalLM'; write ('CausalLM',)")
    assert "Sloppy" not in reg.names("regularizer")


def test_a_recipe_naming_a_broken_plugin_gets_its_error(install: Callable[..., None]) -> None:
    from lmforge.core.registry import unknown_plugin_message

    install("fakeplug", "1.2.3", """
        [lmforge.regularizers]
        Missing = fakeplug_boom:Whatever
        """, fakeplug_boom='raise ImportError("no compiled extension here")\n')
    reg = registry(refresh=True)
    assert unknown_plugin_message("regularizer", "Missing", reg) == (
        "regularizer 'Missing' from fakeplug 1.2.3 is installed but broken: import failed: ImportError: no compiled "
        "extension here. Fix or uninstall fakeplug (`lmforge plugins` lists broken plugins).")


def test_info_for_and_find_look_plugins_up_by_class_and_name(install: Callable[..., None]) -> None:
    install("fakeplug", "1.2.3", """
        [lmforge.regularizers]
        FakeL3Penalty = fakeplug_mod:FakeL3Penalty
        """, fakeplug_mod=PLUGIN_MODULE)
    reg = registry(refresh=True)
    info = reg.get("regularizer", "FakeL3Penalty")
    assert reg.info_for(info.cls) is info and reg.info_for(int) is None
    assert reg.find("FakeL3Penalty") == [info] and reg.find("Nope") == []


@pytest.mark.parametrize("flag", [["--plugins", "FakeL3Penalty"], ["--plugins=FakeL3Penalty"]])
def test_the_plugins_flag_loads_only_the_named_third_party_plugins(
        install: Callable[..., None], capsys: pytest.CaptureFixture[str], flag: list[str]) -> None:
    from lmforge.cli.main import main

    install("fakeplug", "1.2.3", """
        [lmforge.regularizers]
        FakeL3Penalty = fakeplug_mod:FakeL3Penalty
        [lmforge.augmenters]
        FakeAugmenter = fakeplug_aug:FakeAugmenter
        """, fakeplug_mod=PLUGIN_MODULE,
        fakeplug_aug='from lmforge.core.plugins import Augmenter\n\n\n'
                     'class FakeAugmenter(Augmenter):\n    """Fake."""\n')
    mp: pytest.MonkeyPatch = install.monkeypatch  # type: ignore[attr-defined]
    mp.setenv(AUTOLOAD_ENV, "0")  # main() sets both variables; the fixture restores them
    mp.setenv(ALLOW_ENV, "")
    assert main(["plugins", *flag]) == 0  # the flag may come anywhere on the command line
    out = capsys.readouterr().out
    assert "FakeL3Penalty" in out and "fakeplug 1.2.3" in out and "FakeAugmenter" not in out
    assert "RDrop" in out  # built-ins always load

    assert main(["--plugins", "", "plugins"]) == 0
    assert "fakeplug" not in capsys.readouterr().out
    assert main(["--plugins"]) == 2
    assert "--plugins needs a value" in capsys.readouterr().err


def test_a_recipe_naming_a_plugin_for_another_lmforge_fails_at_parse_time(
        install: Callable[..., None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from lmforge.cli.main import main

    install("fakeplug", "1.2.3", """
        [lmforge.regularizers]
        FakeL3Penalty = fakeplug_mod:FakeL3Penalty
        """, fakeplug_mod=PLUGIN_MODULE)
    _write_requirement(tmp_path, "fakeplug", "1.2.3", f"lmforge>={NEXT}")
    registry(refresh=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lmforge"])
    with pytest.raises(SystemExit):
        main(["fit", "--config", "quickstart", "--model.regularizers+=FakeL3Penalty", "--trainer.logger", "false"])
    assert ("model.regularizers: regularizer 'FakeL3Penalty' from fakeplug 1.2.3 is installed but broken: requires "
            f"lmforge>={NEXT} but lmforge {__version__} is installed.") in capsys.readouterr().err
