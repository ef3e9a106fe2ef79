"""The plugin registry: every plugin comes from a Python entry point.

Built-in plugins are declared in lmforge's own ``pyproject.toml`` under the
same groups third-party packages use, so the core never imports
``lmforge.plugins`` by name. Loading a plugin's entry point imports its
class, which is what lets jsonargparse resolve a short name such as
``L2Penalty`` in a recipe.

A plugin is validated when it registers (as pluggy does): its entry point
must load, be a subclass of its kind's base class and be named after the
class; a name claimed by two distributions is refused (a built-in keeps its
name). A plugin that fails is recorded as broken, with its distribution and
the error, and everything else keeps working.

``LMFORGE_DISABLE_PLUGIN_AUTOLOAD=1`` loads only the built-ins plus the
third-party plugins named in ``LMFORGE_PLUGINS`` (comma-separated), like
pytest's ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata

GROUPS: dict[str, str] = {
    "objective": "lmforge.objectives",
    "regularizer": "lmforge.regularizers",
    "augmenter": "lmforge.augmenters",
    "bias_mitigator": "lmforge.bias_mitigators",
    "distiller": "lmforge.distillers",
}
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


def unknown_plugin_message(kind: str, name: str, registry: Registry) -> str:
    installed = ", ".join(registry.names(kind)) or "none"
    broken = [b.name for b in registry.broken if b.kind == kind]
    text = f"unknown {kind.replace('_', ' ')} {name!r}. Installed {kind.replace('_', ' ')}s: {installed}."
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
    from lmforge.core.plugins import KIND_BASES

    base = KIND_BASES[kind]
    if not isinstance(obj, type) or not issubclass(obj, base):
        return f"entry point {ep.value!r} is not a subclass of lmforge.core.plugins.{base.__name__}"
    if obj.__name__ != ep.name:
        return f"entry point name {ep.name!r} must equal the class name {obj.__name__!r}"
    return None


def discover() -> Registry:
    """Read, load and validate every plugin entry point (uncached)."""
    allow = {n.strip() for n in os.environ.get(ALLOW_ENV, "").split(",") if n.strip()}
    plugins: dict[str, dict[str, PluginInfo]] = {kind: {} for kind in GROUPS}
    broken: list[PluginInfo] = []
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
