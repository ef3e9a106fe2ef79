"""``lmforge plugins``: list the registered plugins, show one, or scaffold a new plugin package.

    lmforge plugins [--kind KIND]            every plugin: kind, name, distribution and version, summary
    lmforge plugins show NAME [--kind KIND]  one plugin: metadata, hooks, init arguments, a recipe snippet
    lmforge plugins new KIND NAME [--dir D] [--dist DIST]
                                             write a ready-to-edit plugin package (lmforge.cli.scaffold)
    lmforge plugins new KIND NAME --into P   add a plugin to the existing package in directory P

The listing is cached so that ``lmforge plugins`` does not import torch. Checking a plugin means
importing it (its class must load, subclass its kind's base class and declare valid metadata), and
every plugin imports torch: about 5 s on a small machine. The listing is therefore kept in lmforge's
cache, keyed by a fingerprint of everything that can change it, all read without importing anything:

- lmforge's version, the interpreter, and the plugin allow-list variables
  (``LMFORGE_DISABLE_PLUGIN_AUTOLOAD``, ``LMFORGE_PLUGINS``);
- every installed distribution and its version (a plugin's dependency
  installed, upgraded or removed);
- every plugin entry point (group, name, target, distribution);
- the path, size and modification time of every ``.py`` file in the
  top-level packages those entry points import (an edit in an editable
  install).

A changed fingerprint, ``lmforge plugins --refresh`` or an unreadable cache
means a full check, whose result is written back. A package whose tree holds
more than ``MAX_FILES`` files is not fingerprinted file by file; the listing is
then checked every time. For the same reason this module imports the plugin
kinds, the registry's checks and the scaffold (all of which import torch) only
inside the functions that need them.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from lmforge import __version__
from lmforge.core.data.files import default_cache_dir
from lmforge.core.hooks import GROUPS, RECIPE_KEYS
from lmforge.core.registry import ALLOW_ENV, AUTOLOAD_ENV


def main(argv: list[str]) -> int:
    kinds = sorted(GROUPS)
    parser = argparse.ArgumentParser(
        prog="lmforge plugins",
        description="List the registered plugins (built-in and installed), show one, or scaffold a new plugin "
                    "package. `lmforge --plugins A,B ...` loads only the built-ins and A, B.",
    )
    parser.add_argument("--kind", choices=kinds, help="only this kind")
    parser.add_argument("--refresh", action="store_true",
                        help="import and check every plugin again instead of using the cached listing (the cache "
                             "is refreshed by itself when a package or a plugin's source changes)")
    sub = parser.add_subparsers(dest="action")
    show = sub.add_parser("show", help="a plugin's metadata, hooks, init arguments and a recipe snippet")
    show.add_argument("name", help="the plugin's name (its class name), as in a recipe")
    show.add_argument("--kind", dest="show_kind", choices=kinds, help="the kind, when two kinds share the name")
    new = sub.add_parser("new", help="write a ready-to-edit plugin package, or add a plugin to one, with tests "
                                     "that use the lmforge_kit fixture")
    new.add_argument("new_kind", metavar="KIND", choices=kinds, help=f"one of {', '.join(kinds)}")
    new.add_argument("new_name", metavar="NAME", help="the plugin's class name, CamelCase (e.g. ZLoss)")
    new.add_argument("--dist", help="the new package's distribution name (default: lmforge-<name>); its import "
                                    "name is this with _ for -")
    where = new.add_mutually_exclusive_group()
    where.add_argument("--dir", help="where to write the new package (default: ./<dist>); must not exist or be "
                                     "empty")
    where.add_argument("--into", metavar="PACKAGE_DIR",
                       help="add the plugin to the existing package in PACKAGE_DIR (made by this command or by "
                            "hand): its module, its test file and its entry point in pyproject.toml")
    args = parser.parse_args(argv)
    if args.action == "show":
        return show_plugin(args.name, args.show_kind or args.kind)
    if args.action == "new":
        if args.into is not None and args.dist is not None:
            parser.error("--dist names a new package; with --into the distribution is the one in "
                         "PACKAGE_DIR/pyproject.toml")
        return new_plugin(args.new_kind, args.new_name, args.dir, args.dist, args.into)
    return list_plugins(args.kind, args.refresh)


def list_plugins(kind: str | None, refresh: bool = False) -> int:
    found = listing(refresh)
    plugins = [p for p in found["plugins"] if kind in (None, p["kind"])]
    rows = [(p["kind"], p["name"], f"{p['dist']} {p['version']}", p["summary"]) for p in plugins]
    if rows:
        widths = [max(len(r[c]) for r in rows) for c in range(3)]
        indent = " " * (widths[0] + 2)
        for plugin, row in zip(plugins, rows):
            print("  ".join(f"{row[c]:<{widths[c]}}" for c in range(3)) + "  " + row[3])
            if plugin["details"]:
                print(indent + "; ".join(plugin["details"]))
    broken = [b for b in found["broken"] if kind in (None, b["kind"])]
    if broken:
        print("\nBroken plugins (not loaded):")
        for b in broken:
            print(f"  {b['kind']}  {b['name']}  ({b['dist']} {b['version']}): {b['error']}")
    return 0


def show_plugin(name: str, kind: str | None) -> int:
    from lmforge.cli.plugin_docs import describe_plugin  # the plugin kinds, and torch
    from lmforge.core.registry import registry, unknown_plugin_message

    reg = registry()
    found = [i for i in reg.find(name) if kind in (None, i.kind)]
    if not found:
        broken = [b for b in reg.broken if b.name == name and kind in (None, b.kind)]
        if broken:
            b = broken[0]
            print(f"lmforge plugins: {b.kind} {name!r} from {b.dist} {b.version} is broken: {b.error}",
                  file=sys.stderr)
        else:
            kinds = [kind] if kind else list(RECIPE_KEYS)
            near = "; ".join(unknown_plugin_message(k, name, reg).split(". ", 1)[1] for k in kinds)
            print(f"lmforge plugins: no plugin {name!r}. {near}", file=sys.stderr)
        return 2
    if len(found) > 1:
        print(f"lmforge plugins: {name!r} is a plugin of several kinds ({', '.join(i.kind for i in found)}); "
              "add --kind.", file=sys.stderr)
        return 2
    print(describe_plugin(found[0]))
    return 0


def new_plugin(kind: str, name: str, directory: str | None, dist: str | None = None,
               into: str | None = None) -> int:
    from lmforge.cli.scaffold import ScaffoldError, add_to_package, write_package  # the plugin kinds, and torch

    try:
        if into is not None:
            changed = add_to_package(kind, name, into)
        else:
            root = write_package(kind, name, directory, dist)
    except ScaffoldError as exc:
        print(f"lmforge plugins new: {exc}", file=sys.stderr)
        return 2
    if into is not None:
        print(f"added {name} to {into}:")
        for path in changed:
            print(f"  {path}")
        print(f"next: pip install -e {into} (entry points are read at install, so reinstall) && pytest")
        return 0
    print(f"wrote {root}")
    print(f"next: cd {root} && pip install -e . && pytest")
    return 0


# -- the cached listing ---------------------------------------------------------------------------

MAX_FILES = 5000
FORMAT = 1  # bump when the cached rows change shape


def fingerprint() -> str | None:
    """A digest of what the plugin listing depends on; None when it cannot be taken cheaply."""
    h = hashlib.sha256()
    for part in (FORMAT, __version__, sys.executable, os.environ.get(AUTOLOAD_ENV, ""), os.environ.get(ALLOW_ENV, "")):
        h.update(f"{part}\0".encode())
    dists = sorted({(d.metadata["Name"] or "", d.version or "") for d in metadata.distributions()})
    h.update(repr(dists).encode())
    packages: set[str] = set()
    for group in GROUPS.values():
        for ep in sorted(metadata.entry_points(group=group), key=lambda e: (e.name, e.value)):
            dist = ep.dist.metadata["Name"] if ep.dist is not None else ""
            h.update(f"{group}\0{ep.name}\0{ep.value}\0{dist}\0".encode())
            packages.add(ep.value.split(":", 1)[0].split(".", 1)[0])
    for package in sorted(packages):
        stats = _source_stats(package)
        if stats is None:
            return None
        h.update(repr(stats).encode())
    return h.hexdigest()


def _source_stats(package: str) -> list[tuple[str, int, int]] | None:
    """(path, size, mtime) of the ``.py`` files of a top-level module or package, without importing it."""
    try:
        spec = importlib.util.find_spec(package)  # a top-level name: finds, does not import
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return [(package, -1, -1)]  # not importable now: the check will say so, and the key notes it
    roots = list(spec.submodule_search_locations or []) or ([spec.origin] if spec.origin else [])
    stats: list[tuple[str, int, int]] = []
    for root in roots:
        paths = [root] if os.path.isfile(root) else (
            os.path.join(d, f) for d, _, files in os.walk(root) for f in files if f.endswith(".py"))
        for path in paths:
            try:
                st = os.stat(path)
            except OSError:
                continue
            stats.append((path, st.st_size, st.st_mtime_ns))
            if len(stats) > MAX_FILES:
                return None
    return sorted(stats)


def _cache_file(key: str) -> Path:
    return default_cache_dir() / "plugins" / f"listing-{key[:32]}.json"


def checked_listing() -> dict[str, list[dict[str, Any]]]:
    """Import and check every plugin (the registry), as rows ``lmforge plugins`` prints."""
    from lmforge.cli.plugin_docs import metadata_lines  # the plugin kinds, and torch
    from lmforge.core.registry import registry

    reg = registry()
    return {
        "plugins": [{"kind": i.kind, "name": i.name, "dist": i.dist, "version": i.version, "summary": i.summary,
                     "details": metadata_lines(i.cls)} for i in reg.all()],
        "broken": [{"kind": b.kind, "name": b.name, "dist": b.dist, "version": b.version, "error": b.error}
                   for b in reg.broken],
    }


def listing(refresh: bool = False) -> dict[str, list[dict[str, Any]]]:
    """The plugin listing: from the cache when nothing it depends on changed, else checked and cached."""
    key = fingerprint()
    if key is not None and not refresh:
        try:
            return json.loads(_cache_file(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
    rows = checked_listing()
    if key is not None:
        _write(_cache_file(key), rows)
    return rows


KEEP = 8  # listings kept (several environments can share one cache)


def _write(path: Path, rows: dict[str, list[dict[str, Any]]]) -> None:
    """Cache ``rows``, dropping all but the newest listings; a cache that cannot be written only costs speed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        older = sorted(path.parent.glob("listing-*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in older[KEEP - 1:]:
            old.unlink(missing_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(rows), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass
