"""``lmforge plugins new KIND NAME``: a ready-to-edit plugin package.

The package (``lmforge-<name>``, import name ``lmforge_<name>``) holds::

    pyproject.toml                 the entry point under the kind's group, the supported lmforge versions
    README.md                      install, use in a recipe, test, publish, compatibility
    src/lmforge_<name>/<name>.py   the plugin: a pure function with placeholder math, the class with its
                                   hooks stubbed and documented (the stage each runs at)
    tests/test_<name>.py           the conformance kit (lmforge.testing) and reference tests of the math

As written it installs, registers and passes its own tests; the templates are
package data under ``lmforge/cli/templates``.
"""

from __future__ import annotations

import keyword
import re
from importlib import resources
from pathlib import Path
from string import Template

from lmforge import __version__
from lmforge.cli.plugin_docs import init_arguments, recipe_snippet
from lmforge.core.plugins import KIND_BASES, snake_case
from lmforge.core.registry import GROUPS, registry


class ScaffoldError(ValueError):
    """The scaffold cannot be written as asked."""


def lmforge_requirement(version: str | None = None) -> str:
    """``lmforge>=0.1,<0.2`` for lmforge 0.1.x: the releases that keep this one's plugin contract.

    Before 1.0 a minor release may change the contract; from 1.0 on, only a major one.
    """
    parts = [int(p) for p in re.findall(r"\d+", version or __version__)[:2]] + [0, 0]
    major, minor = parts[0], parts[1]
    if major == 0:
        return f"lmforge>={major}.{minor},<{major}.{minor + 1}"
    return f"lmforge>={major}.{minor},<{major + 1}"


def names(name: str) -> dict[str, str]:
    """The names the package is written with: class, module, import package and distribution."""
    module = snake_case(name)
    return {"name": name, "module": module, "package": f"lmforge_{module}",
            "dist": f"lmforge-{module.replace('_', '-')}"}


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


def write_package(kind: str, name: str, directory: str | Path | None = None) -> Path:
    """Write the package for plugin ``name`` of ``kind`` into ``directory`` (default ``./lmforge-<name>``).

    Returns:
        The package's root directory.

    Raises:
        ScaffoldError: a bad kind or name, or a directory that exists and is not empty.
    """
    check_name(kind, name)
    values = names(name)
    root = Path(directory) if directory is not None else Path.cwd() / values["dist"]
    if root.exists() and any(root.iterdir()):
        raise ScaffoldError(f"{root} exists and is not empty; give --dir a new or empty directory.")
    values.update(kind=kind, kind_label=kind.replace("_", " "), group=GROUPS[kind],
                  lmforge_requirement=lmforge_requirement())
    templates = resources.files("lmforge.cli") / "templates"
    plugin_source = Template((templates / "plugins" / f"{kind}.py.tmpl").read_text(encoding="utf-8"))
    files = {
        "pyproject.toml": templates / "pyproject.toml.tmpl",
        "README.md": templates / "README.md.tmpl",
        f"src/{values['package']}/__init__.py": templates / "__init__.py.tmpl",
        f"tests/test_{values['module']}.py": templates / "tests" / f"{kind}.py.tmpl",
    }
    source = plugin_source.substitute(values)
    plugin_class = _load_class(source, f"{values['package']}.{values['module']}", name)
    snippet = recipe_snippet(kind, name, init_arguments(plugin_class))
    values["recipe_snippet"] = "\n".join(line[2:] for line in snippet)
    for relative, template in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(template.read_text(encoding="utf-8")).substitute(values), encoding="utf-8")
    plugin_path = root / "src" / values["package"] / f"{values['module']}.py"
    plugin_path.write_text(source, encoding="utf-8")
    (root / ".gitignore").write_text("__pycache__/\n*.egg-info/\nbuild/\ndist/\n.pytest_cache/\n", encoding="utf-8")
    return root


def _load_class(source: str, module: str, name: str) -> type:
    """The plugin class defined by the generated ``source`` (for its arguments, before it is installed)."""
    namespace: dict[str, object] = {"__name__": module}
    exec(compile(source, f"<{module}>", "exec"), namespace)  # our own template, just written
    return namespace[name]  # type: ignore[return-value]
