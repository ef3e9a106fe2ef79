"""Where a recipe may write: under the working directory, unless the user allows more.

A recipe is a file one may have downloaded; it should not be able to write
checkpoints, logs or caches anywhere on the machine (``save_dir: /etc``,
``dirpath: ../../somewhere``, ``name: ../../x``). Every path is checked after
it is joined, as the writer will join it:

- `outside_writes` (the parsed recipe, before anything is built): each
  directory argument, and what loggers and callbacks join onto it (a logger's
  ``name``, ``version``, ``sub_dir``, ``project``; a callback's ``filename``,
  its ``{...}`` fields filled in);
- `trainer_outside_writes` (the built trainer, before it runs): where each
  logger logs, where each checkpoint callback writes (its directory as
  Lightning derives it, joined with its filename), the samples file and any
  other directory a callback holds;
- the checkpoint writer refuses a path outside as the last guard
  (`lmforge.runtime.checkpoint_io.AtomicCheckpointIO`).

The CLI refuses them unless the command line says ``--allow_outside_run_dir`` or the
environment sets ``LMFORGE_ALLOW_OUTSIDE_WRITES=1`` (a recipe can set neither).

A path is inside when, relative paths taken from the working directory,

- with every symlink resolved, it lies under the (resolved) working directory; or
- written without ``..``, it lies under the working directory as written: it may
  pass through a symlink that is already there (``runs -> /scratch/runs``), which
  only the user can have made.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ALLOW_ENV = "LMFORGE_ALLOW_OUTSIDE_WRITES"
ALLOW_FLAG = "--allow_outside_run_dir"
#: Argument names under which Lightning's trainer, loggers and callbacks take a directory they write to.
WRITE_KEYS = ("default_root_dir", "save_dir", "dir", "dirpath", "root_dir", "log_dir", "output_dir")
#: Arguments a logger joins onto its directory, in order.
JOINED_KEYS = ("name", "version", "sub_dir")


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
    trainer = config.get("trainer") or {}
    yield from _find(trainer, "trainer")
    yield from _joined(trainer)
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


def _joined(trainer: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """What loggers and callbacks join onto their directories: ``(key, joined path)``."""
    default = str(trainer.get("default_root_dir") or ".")
    log_dirs = []
    for key, args in _class_args(trainer.get("logger"), "trainer.logger"):
        base = next((str(args[k]) for k in WRITE_KEYS if isinstance(args.get(k), (str, Path))), default)
        path = base
        for name in JOINED_KEYS:
            value = args.get(name)
            if isinstance(value, bool) or value is None or value == "":
                continue
            part = f"version_{value}" if name == "version" and isinstance(value, int) else str(value)
            path = os.path.join(path, part)
            yield f"{key}.init_args.{name}", path
        if isinstance(args.get("project"), str):
            yield f"{key}.init_args.project", os.path.join(base, args["project"])
        log_dirs.append(path if args.get("version") is not None else os.path.join(path, "version_0"))
    log_dir = log_dirs[0] if log_dirs else default
    for key, args in _class_args(trainer.get("callbacks"), "trainer.callbacks"):
        filename = args.get("filename")
        if isinstance(filename, str):
            base = next((str(args[k]) for k in WRITE_KEYS if isinstance(args.get(k), (str, Path))),
                        os.path.join(log_dir, "checkpoints"))
            yield f"{key}.init_args.filename", os.path.join(base, fill_fields(filename))


def _class_args(node: Any, key: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(recipe key, init_args)`` of a ``{class_path, init_args}`` node or of each one in a list."""
    nodes = node if isinstance(node, list) else [node]
    for i, spec in enumerate(nodes):
        if isinstance(spec, dict) and isinstance(spec.get("init_args"), dict):
            yield (f"{key}[{i}]" if isinstance(node, list) else key), spec["init_args"]


def fill_fields(template: str) -> str:
    """A checkpoint filename template (``best-{step}``) with its fields filled in, as a path to check."""
    return re.sub(r"\{[^{}]*\}", "0", template)


def outside_writes(config: dict[str, Any], root: str | Path | None = None) -> list[str]:
    """One line per output path of ``config`` outside ``root`` (default: the working directory)."""
    root = Path.cwd() if root is None else Path(root)
    return [f"{key}: {path!r} resolves to {_absolute(Path(path), root).resolve()}"
            for key, path in write_paths(config) if not is_inside(path, root)]


def trainer_outside_writes(trainer: Any, root: str | Path) -> list[str]:
    """One line per path the built ``trainer``'s loggers and callbacks will write that lies outside ``root``."""
    root = Path(root)
    return [f"{what}: {path!r} resolves to {_absolute(Path(path), root).resolve()}"
            for what, path in trainer_write_paths(trainer) if not is_inside(path, root)]


def trainer_write_paths(trainer: Any) -> Iterator[tuple[str, str]]:
    """``(what, path)`` of everything a built trainer's loggers and callbacks write to, joined as they join it.

    Reads attributes only: nothing is created, no W&B run starts, and no collective is called (unlike
    ``Trainer.log_dir``), so every rank may call it.
    """
    yield "trainer.default_root_dir", str(trainer.default_root_dir)
    loggers = list(getattr(trainer, "loggers", []) or [])
    for logger in loggers:
        kind = type(logger).__name__
        for attr in ("save_dir", "root_dir", "log_dir"):
            value = getattr(logger, attr, None)
            if isinstance(value, (str, Path)):
                yield f"{kind}.{attr}", str(value)
    log_dir = _log_dir(trainer, loggers)
    for callback in getattr(trainer, "callbacks", []) or []:
        kind = type(callback).__name__
        for attr in WRITE_KEYS:
            value = getattr(callback, attr, None)
            if isinstance(value, (str, Path)):
                yield f"{kind}.{attr}", str(value)
        filename = getattr(callback, "filename", None)
        if isinstance(filename, str):
            if hasattr(callback, "CHECKPOINT_NAME_LAST"):  # a ModelCheckpoint: its directory as Lightning derives it
                directory = getattr(callback, "dirpath", None) or _checkpoint_dir(trainer, loggers)
            else:  # files a callback keeps in the run's log directory (ValidationSamples)
                directory = log_dir
            yield f"{kind}.filename", os.path.join(str(directory), fill_fields(filename))


def _log_dir(trainer: Any, loggers: list[Any]) -> str:
    if loggers and isinstance(getattr(loggers[0], "log_dir", None), str):
        return loggers[0].log_dir
    if loggers and isinstance(getattr(loggers[0], "save_dir", None), str):
        return loggers[0].save_dir
    return str(trainer.default_root_dir)


def _checkpoint_dir(trainer: Any, loggers: list[Any]) -> str:
    """Where ``ModelCheckpoint`` without a ``dirpath`` writes (Lightning's ``__resolve_ckpt_dir``)."""
    if not loggers:
        return os.path.join(str(trainer.default_root_dir), "checkpoints")
    logger = loggers[0]
    save_dir = logger.save_dir if isinstance(getattr(logger, "save_dir", None), str) else str(trainer.default_root_dir)
    version = getattr(logger, "_version", None)
    if version is None and type(logger).__name__ != "WandbLogger":
        version = getattr(logger, "version", None)
    version = version if isinstance(version, str) else f"version_{version if version is not None else 0}"
    return os.path.join(save_dir, str(getattr(logger, "name", "") or ""), version, "checkpoints")


def outside_writes_message(lines: list[str], root: Path) -> str:
    return (f"the recipe writes outside the run directory {root} (the working directory):\n  " + "\n  ".join(lines)
            + f"\nUse paths under {root}, or allow this run to write elsewhere with {ALLOW_FLAG} on the command "
            f"line (or {ALLOW_ENV}=1 in the environment).")


class OutsideWriteError(ValueError):
    """lmforge was about to write outside the run directory."""


def refuse_outside(path: str | Path, root: str | Path, what: str) -> None:
    """Raise `OutsideWriteError` when ``path`` (the file or directory lmforge is about to write) is outside ``root``."""
    if not is_inside(path, root):
        raise OutsideWriteError(
            f"refusing to write the {what} {path}: it resolves to {_absolute(Path(path), Path(root)).resolve()}, "
            f"outside the run directory {Path(root)}. Allow it with {ALLOW_FLAG} (or {ALLOW_ENV}=1)."
        )
