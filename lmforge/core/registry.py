"""The plugin registry: every plugin comes from a Python entry point.

Built-in plugins are declared in lmforge's own ``pyproject.toml`` under the
same groups third-party packages use, so the core never imports
``lmforge.plugins`` by name. Loading a plugin's entry point imports its
class, which is what lets jsonargparse resolve a short name such as
``L2Penalty`` in a recipe.

A plugin is validated when it registers (as pluggy does): its distribution
must support this lmforge version, its entry point must load, be a subclass
of its kind's base class, be named after the class and declare well-formed
metadata (`lmforge.core.plugins.metadata_problems`); a name claimed by
two distributions is refused (a built-in keeps its name). A plugin that fails
is recorded as broken, with its distribution and the error, and everything
else keeps working; a recipe that names a broken plugin fails at parse time
with that error.

Versions: a plugin package states the lmforge versions it supports in its own
requirements (``dependencies = ["lmforge>=0.2,<0.3"]`` in its pyproject.toml,
``Requires-Dist`` in its metadata). When the installed lmforge falls outside
that range the package's plugins are not imported and are listed as broken,
naming both versions: its hooks were written against another contract, and
failing at parse time is cheaper than failing mid-run.

``LMFORGE_DISABLE_PLUGIN_AUTOLOAD=1`` loads only the built-ins plus the
third-party plugins named in ``LMFORGE_PLUGINS`` (comma-separated), like
pytest's ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``; ``lmforge --plugins A,B ...``
sets both.
"""

from __future__ import annotations

import difflib
import os
import weakref
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from lmforge.core.hooks import GROUPS

BUILTIN_DIST = "lmforge"
AUTOLOAD_ENV = "LMFORGE_DISABLE_PLUGIN_AUTOLOAD"
ALLOW_ENV = "LMFORGE_PLUGINS"


@dataclass(frozen=True)
class PluginInfo:
    """One registered (or broken) plugin."""

    kind: str
    name: str
    dist: str
    version: str
    cls: type | None = None
    error: str | None = None

    @property
    def summary(self) -> str:
        doc = (self.cls.__doc__ or "") if self.cls is not None else ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    @property
    def qualname(self) -> str:
        return f"{self.cls.__module__}.{self.cls.__qualname__}" if self.cls is not None else ""


class Registry:
    """Registered plugins by kind, and the ones that failed to register."""

    def __init__(self, plugins: dict[str, dict[str, PluginInfo]], broken: list[PluginInfo]) -> None:
        self.plugins = plugins
        self.broken = broken

    def names(self, kind: str) -> list[str]:
        return sorted(self.plugins[kind])

    def get(self, kind: str, name: str) -> PluginInfo:
        """The plugin ``name`` of ``kind``; a clear error listing the installed ones if absent."""
        if name in self.plugins[kind]:
            return self.plugins[kind][name]
        raise KeyError(unknown_plugin_message(kind, name, self))

    def all(self) -> list[PluginInfo]:
        return [info for kind in GROUPS for info in sorted(self.plugins[kind].values(), key=lambda i: i.name)]

    def info_for(self, cls: type) -> PluginInfo | None:
        """The registered plugin whose class is ``cls``; None for a class no entry point names."""
        for kind in GROUPS:
            for info in self.plugins[kind].values():
                if info.cls is cls:
                    return info
        return None

    def find(self, name: str) -> list[PluginInfo]:
        """Every registered plugin called ``name``, of any kind."""
        return [self.plugins[kind][name] for kind in GROUPS if name in self.plugins[kind]]


def unknown_plugin_message(kind: str, name: str, registry: Registry) -> str:
    label = kind.replace("_", " ")
    for bad in registry.broken:
        if bad.kind == kind and bad.name == name:
            return (f"{label} {name!r} from {bad.dist} {bad.version} is installed but broken: {bad.error}. "
                    f"Fix or uninstall {bad.dist} (`lmforge plugins` lists broken plugins).")
    names = list(registry.names(kind))
    installed = ", ".join(names) or "none"
    broken = [b.name for b in registry.broken if b.kind == kind]
    near = difflib.get_close_matches(name, names, n=1, cutoff=0.6) or [
        n for n in names if n.lower() == name.lower()]
    text = f"unknown {label} {name!r}." + (f" Did you mean {near[0]!r}?" if near else "")
    text += f" Installed {label}s: {installed}."
    if broken:
        text += f" Broken (see `lmforge plugins`): {', '.join(broken)}."
    return text


def _dist_of(ep: metadata.EntryPoint) -> tuple[str, str]:
    dist = ep.dist
    if dist is None:
        return "unknown", ""
    return dist.metadata["Name"] or "unknown", dist.version or ""


def _allowed(dist: str) -> bool:
    return dist == BUILTIN_DIST or os.environ.get(AUTOLOAD_ENV, "") in ("", "0")


def _validate(kind: str, ep: metadata.EntryPoint, obj: object) -> str | None:
    # Imported at the first discovery, not with this module: `lmforge plugins` reads GROUPS and the
    # cached listing without importing torch (see lmforge.cli.plugins).
    from lmforge.core.plugins import KIND_BASES, metadata_problems

    base = KIND_BASES[kind]
    if not isinstance(obj, type) or not issubclass(obj, base):
        return f"entry point {ep.value!r} is not a subclass of lmforge.core.plugins.{base.__name__}"
    if obj.__name__ != ep.name:
        return f"entry point name {ep.name!r} must equal the class name {obj.__name__!r}"
    problems = metadata_problems(obj)
    if problems:
        return "metadata: " + "; ".join(problems)
    return None


def version_problem(dist: metadata.Distribution | None) -> str | None:
    """Why ``dist`` cannot be used with the installed lmforge (its ``lmforge`` requirement excludes it), or None."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    from lmforge import __version__

    if dist is None:
        return None
    for text in dist.requires or []:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        if canonicalize_name(requirement.name) != BUILTIN_DIST:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue  # an optional extra's requirement
        if not requirement.specifier.contains(__version__, prereleases=True):
            name = dist.metadata["Name"]
            # As the package wrote it (a SpecifierSet prints its parts in its own order).
            spec = text.split(";", 1)[0].strip()[len(requirement.name):].strip(" ()").replace(" ", "")
            return (f"requires lmforge{spec} but lmforge {__version__} is installed. Install a release of {name} "
                    f"that supports lmforge {__version__} (`pip install -U {name}`), or lmforge{spec}")
    return None


def discover() -> Registry:
    """Read, load and validate every plugin entry point (uncached)."""
    allow = {n.strip() for n in os.environ.get(ALLOW_ENV, "").split(",") if n.strip()}
    plugins: dict[str, dict[str, PluginInfo]] = {kind: {} for kind in GROUPS}
    broken: list[PluginInfo] = []
    versions: dict[str, str | None] = {}  # distribution -> why it does not fit this lmforge
    for kind, group in GROUPS.items():
        claims: dict[str, list[PluginInfo]] = {}
        seen: set[tuple[str, str]] = set()
        for ep in metadata.entry_points(group=group):
            dist, version = _dist_of(ep)
            if (dist, ep.name) in seen:  # the same distribution found twice on sys.path
                continue
            seen.add((dist, ep.name))
            if not _allowed(dist) and ep.name not in allow:
                continue
            if dist != BUILTIN_DIST:
                if dist not in versions:
                    versions[dist] = version_problem(ep.dist)
                if versions[dist]:
                    broken.append(PluginInfo(kind, ep.name, dist, version, error=versions[dist]))
                    continue
            try:
                obj = ep.load()
            except Exception as exc:  # a third-party import can fail in any way
                broken.append(PluginInfo(kind, ep.name, dist, version, error=f"import failed: {type(exc).__name__}: {exc}"))
                continue
            problem = _validate(kind, ep, obj)
            if problem:
                broken.append(PluginInfo(kind, ep.name, dist, version, error=problem))
                continue
            claims.setdefault(ep.name, []).append(PluginInfo(kind, ep.name, dist, version, cls=obj))
        for name, infos in claims.items():
            builtin = [i for i in infos if i.dist == BUILTIN_DIST]
            winner = builtin[0] if builtin else (infos[0] if len(infos) == 1 else None)
            if winner is not None:
                plugins[kind][name] = winner
            dists = ", ".join(sorted(i.dist for i in infos))
            for info in infos:
                if info is not winner:
                    broken.append(
                        PluginInfo(kind, name, info.dist, info.version, error=f"duplicate name {name!r}, registered by: {dists}")
                    )
    return Registry(plugins, broken)


_REGISTRY: Registry | None = None


def registry(refresh: bool = False) -> Registry:
    """The process-wide registry, loaded on first use (``refresh`` reloads it)."""
    global _REGISTRY
    if _REGISTRY is None or refresh:
        _REGISTRY = discover()
    return _REGISTRY


# -- naming a plugin in messages ---------------------------------------------------------------------

#: Each plugin's recipe key (``model.regularizers[0]``), recorded by `lmforge.core.plugin_checks.check_plugins`
#: for error messages.
RECIPE_KEYS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def origin(cls: type) -> str:
    """``from <distribution> <version>`` for a registered plugin class, else where the class comes from."""
    info = registry().info_for(cls)
    if info is not None:
        return f"from {info.dist} {info.version}".rstrip()
    return f"class {cls.__module__}.{cls.__qualname__}, not an installed plugin"


def describe(plugin: Any) -> str:
    """``ZLoss (model.regularizers[0]; from lmforge-example-plugins 0.1.0)``."""
    cls = plugin if isinstance(plugin, type) else type(plugin)
    key = None if isinstance(plugin, type) else RECIPE_KEYS.get(plugin)
    return f"{cls.__name__} ({key + '; ' if key else ''}{origin(cls)})"
