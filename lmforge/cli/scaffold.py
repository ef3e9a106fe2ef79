"""``lmforge plugins new KIND NAME``: a ready-to-edit plugin package, or a plugin added to one.

A new package (``--dist DIST``, default ``lmforge-<name>``; import name: the
distribution's with ``_`` for ``-``) holds::

    pyproject.toml                 the entry point under the kind's group, the supported lmforge versions
    README.md                      install, use in a recipe, test, publish, compatibility
    src/<package>/<module>.py      the plugin: a pure function with placeholder math, the class with its
                                   hooks stubbed and documented (the stage each runs at)
    tests/test_<module>.py         the conformance kit (the ``lmforge_kit`` fixture) and reference tests

``--into PACKAGE_DIR`` adds a plugin to an existing package, made by the
scaffold or by hand: the plugin module beside the package's others, its test
file, and its entry point in ``pyproject.toml`` under the kind's group (the
file's other lines are kept as they are).

As written it installs, registers and passes its own tests; the templates are
package data under ``lmforge/cli/templates``.
"""

from __future__ import annotations

import keyword
import re
import tomllib
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from lmforge import __version__
from lmforge.cli.plugin_docs import init_arguments, recipe_snippet
from lmforge.core.plugins import KIND_BASES, snake_case
from lmforge.core.registry import GROUPS, registry

#: A distribution name (PEP 508).
DIST_NAME = re.compile(r"^([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])$")


class ScaffoldError(ValueError):
    """The scaffold cannot be written as asked."""


def lmforge_requirement(version: str | None = None) -> str:
    """``lmforge>=0.2,<0.3`` for lmforge 0.2.x: the releases that keep this one's plugin contract.

    Before 1.0 a minor release may change the contract; from 1.0 on, only a major one.
    """
    parts = [int(p) for p in re.findall(r"\d+", version or __version__)[:2]] + [0, 0]
    major, minor = parts[0], parts[1]
    if major == 0:
        return f"lmforge>={major}.{minor},<{major}.{minor + 1}"
    return f"lmforge>={major}.{minor},<{major + 1}"


def names(name: str, dist: str | None = None) -> dict[str, str]:
    """The names the package is written with: class, module, import package and distribution.

    Args:
        dist: The distribution's name; default ``lmforge-<name in snake case, with dashes>``.

    Raises:
        ScaffoldError: ``dist`` is not a distribution name, or does not make a Python package name.
    """
    module = snake_case(name)
    dist = dist if dist is not None else f"lmforge-{module.replace('_', '-')}"
    if not DIST_NAME.match(dist):
        raise ScaffoldError(f"--dist must be a distribution name (letters, digits, '-', '_', '.'; starting and ending "
                            f"with a letter or digit), got {dist!r}; e.g. lmforge-my-plugins.")
    package = re.sub(r"[-_.]+", "_", dist).lower()
    if not package.isidentifier() or keyword.iskeyword(package):
        raise ScaffoldError(f"--dist {dist!r} makes the import package name {package!r}, which is not a Python "
                            "identifier; start it with a letter, e.g. lmforge-my-plugins.")
    return {"name": name, "module": module, "package": package, "dist": dist}


def check_name(kind: str, name: str) -> None:
    if kind not in KIND_BASES:
        raise ScaffoldError(f"KIND must be one of {', '.join(KIND_BASES)}, got {kind!r}.")
    if not name.isidentifier() or keyword.iskeyword(name) or not name[0].isupper():
        raise ScaffoldError(f"NAME must be a Python class name in CamelCase (it is the plugin's public name), "
                            f"got {name!r}; e.g. ZLoss.")
    taken = registry().plugins[kind].get(name)
    if taken is not None:
        raise ScaffoldError(f"{kind.replace('_', ' ')} {name!r} already exists ({taken.dist} {taken.version}); "
                            "the registry refuses a second plugin of that name. Choose another NAME.")


def write_package(kind: str, name: str, directory: str | Path | None = None, dist: str | None = None) -> Path:
    """Write a new package holding plugin ``name`` of ``kind`` into ``directory`` (default ``./<dist>``).

    Args:
        dist: The distribution's name (``--dist``); default ``lmforge-<name>``.

    Returns:
        The package's root directory.

    Raises:
        ScaffoldError: a bad kind, name or distribution name, or a directory that exists and is not empty.
    """
    check_name(kind, name)
    values = _values(kind, names(name, dist))
    root = Path(directory) if directory is not None else Path.cwd() / values["dist"]
    if root.exists() and any(root.iterdir()):
        raise ScaffoldError(f"{root} exists and is not empty; give --dir a new or empty directory, or add the plugin "
                            f"to the package there with --into {root}.")
    source = _plugin_source(values)
    templates = _templates()
    files = {
        "pyproject.toml": _render(templates / "pyproject.toml.tmpl", values),
        "README.md": _render(templates / "README.md.tmpl", values),
        f"src/{values['package']}/__init__.py": _render(templates / "__init__.py.tmpl", values),
        f"src/{values['package']}/{values['module']}.py": source,
        f"tests/test_{values['module']}.py": _render(templates / "tests" / f"{kind}.py.tmpl", values),
        ".gitignore": "__pycache__/\n*.egg-info/\nbuild/\ndist/\n.pytest_cache/\n",
    }
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def add_to_package(kind: str, name: str, directory: str | Path) -> list[Path]:
    """Add plugin ``name`` of ``kind`` to the package at ``directory`` (``--into``).

    The package may come from the scaffold or be written by hand: a ``pyproject.toml`` with a
    ``[project]`` name, and its import package in ``src/<package>/`` or ``<package>/`` (the one its
    lmforge entry points name, or the distribution's name with ``_`` for ``-``). Writes the plugin module
    there, ``tests/test_<module>.py``, the entry point under the kind's group in ``pyproject.toml`` (the
    file's other lines kept as they are) and, when the package's ``__init__.py`` lists its plugins in
    ``__all__`` as the scaffold writes it, the new one there too.

    Returns:
        The files written or changed.

    Raises:
        ScaffoldError: a bad kind or name, no package there, or a plugin module, test file or entry point
            of that name already there.
    """
    check_name(kind, name)
    root = Path(directory)
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        raise ScaffoldError(f"--into must name a package's directory (with a pyproject.toml), got {str(root)!r}, "
                            "which has none. Make a new package without --into.")
    text = pyproject.read_text(encoding="utf-8")
    try:
        project = tomllib.loads(text).get("project", {})
    except tomllib.TOMLDecodeError as exc:
        raise ScaffoldError(f"{pyproject}: not valid TOML ({exc}); fix it, then add the plugin.") from None
    if not isinstance(project.get("name"), str):
        raise ScaffoldError(f"{pyproject}: [project] must have a name (the distribution's), got none.")
    group = GROUPS[kind]
    entry_points = project.get("entry-points", {})
    for other_group, plugins in entry_points.items():
        if name in plugins and other_group.startswith("lmforge."):
            raise ScaffoldError(f"{pyproject}: {name} is already an entry point of {other_group!r}; choose another "
                                "NAME.")
    package_dir, package = _import_package(root, project["name"], entry_points)
    values = _values(kind, {**names(name, project["name"]), "package": package})
    plugin_path = package_dir / f"{values['module']}.py"
    test_path = root / "tests" / f"test_{values['module']}.py"
    for path in (plugin_path, test_path):
        if path.exists():
            raise ScaffoldError(f"{path} exists; choose another NAME (the module is its snake case).")
    source = _plugin_source(values)
    test_source = _render(_templates() / "tests" / f"{kind}.py.tmpl", values)
    new_pyproject = add_entry_point(text, group, name, f"{package}.{values['module']}:{name}")
    init = package_dir / "__init__.py"
    new_init = _export(init.read_text(encoding="utf-8"), package, values["module"], name) if init.is_file() else None

    plugin_path.write_text(source, encoding="utf-8")
    test_path.parent.mkdir(parents=True, exist_ok=True)
    test_path.write_text(test_source, encoding="utf-8")
    pyproject.write_text(new_pyproject, encoding="utf-8")
    changed = [plugin_path, test_path, pyproject]
    if new_init is not None:
        init.write_text(new_init, encoding="utf-8")
        changed.append(init)
    return changed


def add_entry_point(text: str, group: str, name: str, target: str) -> str:
    """``text`` (a pyproject.toml) with ``name = "target"`` in its ``[project.entry-points."<group>"]`` table,
    which is appended when missing. Every other line is kept as it is."""
    line = f'{name} = "{target}"'
    lines = text.splitlines(keepends=True)
    header = re.compile(r"""^\s*\[\s*project\s*\.\s*entry-points\s*\.\s*(["'])""" + re.escape(group)
                        + r"""\1\s*\]\s*(#.*)?$""")
    any_group = re.compile(r"^\s*\[\s*project\s*\.\s*entry-points\s*\.")
    start = next((i for i, current in enumerate(lines) if header.match(current)), None)
    if start is not None:  # the group's table: the line goes after its last entry
        new = _insert(lines, _table_end(lines, start), [line + "\n"])
    elif group in tomllib.loads(text).get("project", {}).get("entry-points", {}):
        raise ScaffoldError(f"pyproject.toml declares the entry points of {group!r} in a form other than a "
                            f'[project.entry-points."{group}"] table; add {line} there by hand.')
    else:  # a new table, after the last entry-point table (or at the end)
        others = [i for i, current in enumerate(lines) if any_group.match(current)]
        at = _table_end(lines, others[-1]) if others else len(lines)
        new = _insert(lines, at, ["\n", f'[project.entry-points."{group}"]\n', line + "\n"])
    try:
        added = tomllib.loads(new)["project"]["entry-points"][group].get(name)
    except (tomllib.TOMLDecodeError, KeyError) as exc:
        raise ScaffoldError(f"pyproject.toml: adding the entry point {line} under {group!r} would not parse "
                            f"({exc}); add it by hand.") from None
    if added != target:
        raise ScaffoldError(f"pyproject.toml: adding the entry point {line} under {group!r} did not take; add it "
                            "by hand.")
    return new


def _table_end(lines: list[str], start: int) -> int:
    """The index just after the last non-blank line of the TOML table whose header is ``lines[start]``."""
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
        end -= 1  # blank lines and the next table's comment belong to what follows
    return end


def _insert(lines: list[str], at: int, new: list[str]) -> str:
    lines = list(lines)
    if at > 0 and not lines[at - 1].endswith("\n"):
        lines[at - 1] += "\n"
    return "".join([*lines[:at], *new, *lines[at:]])


def _import_package(root: Path, dist: str, entry_points: dict[str, Any]) -> tuple[Path, str]:
    """The directory and name of the package's import package."""
    named = [target.split(":")[0].split(".")[0] for group, plugins in entry_points.items()
             if group.startswith("lmforge.") for target in plugins.values()]
    candidates = list(dict.fromkeys([*named, re.sub(r"[-_.]+", "_", dist).lower()]))
    for package in candidates:
        for base in (root / "src", root):
            if (base / package / "__init__.py").is_file():
                return base / package, package
    raise ScaffoldError(f"{root}: cannot find the package's import package (looked for "
                        f"{', '.join(f'src/{c}/__init__.py or {c}/__init__.py' for c in candidates)}).")


_ALL = re.compile(r"^__all__[ \t]*=[ \t]*\[(?P<names>[^\]\n]*)\][ \t]*$", re.MULTILINE)


def _export(init: str, package: str, module: str, name: str) -> str | None:
    """``init`` with ``from <package>.<module> import <name>`` and the name in a one-line ``__all__`` list (the
    scaffold's form); None when ``__all__`` is not written that way."""
    found = _ALL.search(init)
    if found is None:
        return None
    current = [n.strip().strip("\"'") for n in found.group("names").split(",") if n.strip()]
    listed = ", ".join(f'"{n}"' for n in sorted({*current, name}))
    init = init[:found.start()] + f"__all__ = [{listed}]" + init[found.end():]
    imports = list(re.finditer(rf"^from {re.escape(package)}\.\w+ import .*$", init, re.MULTILINE))
    at = imports[-1].end() if imports else found.start() - 1
    statement = f"from {package}.{module} import {name}"
    if imports:
        return init[:at] + "\n" + statement + init[at:]
    return init[:found.start()] + statement + "\n\n" + init[found.start():]


def _templates() -> Any:
    return resources.files("lmforge.cli") / "templates"


def _render(template: Any, values: dict[str, str]) -> str:
    return Template(template.read_text(encoding="utf-8")).substitute(values)


def _values(kind: str, values: dict[str, str]) -> dict[str, str]:
    """``values`` with the kind's names and the lmforge requirement."""
    return {**values, "kind": kind, "kind_label": kind.replace("_", " "), "group": GROUPS[kind],
            "lmforge_requirement": lmforge_requirement()}


def _plugin_source(values: dict[str, str]) -> str:
    """The plugin module; also fills ``values["recipe_snippet"]`` from the class's arguments."""
    source = _render(_templates() / "plugins" / f"{values['kind']}.py.tmpl", values)
    plugin_class = _load_class(source, f"{values['package']}.{values['module']}", values["name"])
    snippet = recipe_snippet(values["kind"], values["name"], init_arguments(plugin_class))
    values["recipe_snippet"] = "\n".join(line[2:] for line in snippet)
    return source


def _load_class(source: str, module: str, name: str) -> type:
    """The plugin class defined by the generated ``source`` (for its arguments, before it is installed)."""
    namespace: dict[str, object] = {"__name__": module}
    exec(compile(source, f"<{module}>", "exec"), namespace)  # our own template, just written
    return namespace[name]  # type: ignore[return-value]
