"""Where a recipe may write: under the working directory, unless the user allows more.

A recipe is a file one may have downloaded; it should not be able to write
checkpoints, logs or caches anywhere on the machine (``save_dir: /etc``,
``dirpath: ../../somewhere``). `outside_writes` lists the recipe's output
paths that resolve outside the directory ``lmforge`` runs in; the CLI refuses
them unless the command line says ``--allow_outside_run_dir`` or the
environment sets ``LMFORGE_ALLOW_OUTSIDE_WRITES=1`` (a recipe can set neither).

A path is inside when, relative paths taken from the working directory,

- with every symlink resolved, it lies under the (resolved) working directory; or
- written without ``..``, it lies under the working directory as written: it may
  pass through a symlink that is already there (``runs -> /scratch/runs``), which
  only the user can have made.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ALLOW_ENV = "LMFORGE_ALLOW_OUTSIDE_WRITES"
ALLOW_FLAG = "--allow_outside_run_dir"
#: Argument names under which Lightning's trainer, loggers and callbacks take a directory they write to.
WRITE_KEYS = ("default_root_dir", "save_dir", "dir", "dirpath", "root_dir", "log_dir")


def outside_allowed() -> bool:
    return os.environ.get(ALLOW_ENV, "").strip().lower() in ("1", "true", "yes")


def is_inside(path: str | Path, root: str | Path) -> bool:
    """Whether ``path`` (relative ones from ``root``) is inside ``root`` by the rules of the module docstring."""
    given, root = Path(path).expanduser(), Path(root)
    absolute = _absolute(given, root)
    if absolute.resolve().is_relative_to(root.resolve()):
        return True
    return ".." not in given.parts and Path(os.path.abspath(absolute)).is_relative_to(os.path.abspath(root))


def _absolute(path: Path, root: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else root / path


def write_paths(config: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(recipe key, path)`` of every directory a parsed recipe (a subcommand's config as a dict) writes to:
    the trainer's, its loggers' and callbacks' (`WRITE_KEYS`), and ``data.init_args.cache_dir``."""
    yield from _find(config.get("trainer") or {}, "trainer")
    data = config.get("data")
    args = (data.get("init_args") or {}) if isinstance(data, dict) else {}
    if isinstance(args.get("cache_dir"), (str, Path)):
        yield "data.init_args.cache_dir", str(args["cache_dir"])


def _find(node: Any, key: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for name, value in node.items():
            if name in WRITE_KEYS and isinstance(value, (str, Path)):
                yield f"{key}.{name}", str(value)
            else:
                yield from _find(value, f"{key}.{name}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _find(value, f"{key}[{i}]")


def outside_writes(config: dict[str, Any], root: str | Path | None = None) -> list[str]:
    """One line per output path of ``config`` outside ``root`` (default: the working directory)."""
    root = Path.cwd() if root is None else Path(root)
    return [f"{key}: {path!r} resolves to {_absolute(Path(path), root).resolve()}"
            for key, path in write_paths(config) if not is_inside(path, root)]


def outside_writes_message(lines: list[str], root: Path) -> str:
    return (f"the recipe writes outside the run directory {root} (the working directory):\n  " + "\n  ".join(lines)
            + f"\nUse paths under {root}, or allow this run to write elsewhere with {ALLOW_FLAG} on the command "
            f"line (or {ALLOW_ENV}=1 in the environment).")
