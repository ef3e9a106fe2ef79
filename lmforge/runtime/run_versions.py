"""Each run its own ``version_N``: claimed atomically, never shared, never overwritten.

Lightning's ``CSVLogger`` and ``TensorBoardLogger`` pick the next ``version_N`` by listing the directory when
they first need it, so two runs started together both take ``version_0``: their metrics interleave, the CSV
logger of one deletes the other's ``metrics.csv``, and their checkpoints mix in one directory.

`claim_versions` runs in the CLI after the recipe is parsed and before the loggers are built. For each CSV
or TensorBoard logger whose ``version`` is unset it creates ``<save_dir>/<name>/version_N`` with ``mkdir``
(which fails if another process created it first) and on failure tries ``N+1``; the logger is then built
with that version, and the checkpoints of the run follow it. Loggers that share a ``save_dir`` and ``name``
share one claim. A W&B run's directory carries a fresh random run id, so W&B needs no claim.

A version the recipe or the command line names (``--trainer.logger.init_args.version=0``) whose directory
already holds files is refused (`RunDirectoryTaken`): the CSV logger would delete that run's ``metrics.csv``.

Under DDP the launching process (rank 0) claims, and the rank processes it starts (``LOCAL_RANK`` set) inherit
the claim through the environment (`ENV`); other ranks never claim, and other processes never inherit. A claim that the run does not get to use (it fails before its
loggers write) is given back by `release_unused`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: Loggers that number their runs ``version_N`` under ``<save_dir>/<name>``.
VERSIONED_LOGGERS = ("CSVLogger", "TensorBoardLogger")
#: The claims of the launching process, for the DDP processes it starts (``{"pid": ..., "versions": {...}}``).
ENV = "LMFORGE_RUN_VERSIONS"
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK")

_claimed: list[Path] = []  # directories this process created for claims, parents first


class RunDirectoryTaken(ValueError):
    """The run directory the recipe names already holds another run."""


def claim_versions(config: Any, subcommand: str | None) -> None:
    """Set ``version`` of every CSV/TensorBoard logger of the parsed recipe ``config`` (in place) to a freshly
    claimed one (``fit``), and refuse a named version that holds a run already (every subcommand)."""
    inherited = _inherited() if _is_other_rank() else {}  # only a DDP rank takes its launcher's claim
    mine: dict[str, int] = {}
    for key, args, root in _versioned_loggers(config):
        version = args.get("version")
        if version is not None:
            _refuse_taken(root / (version if isinstance(version, str) else f"version_{version}"), f"{key}.version",
                          version)
            continue
        if subcommand != "fit":
            continue
        name = os.path.abspath(root)
        if name in mine:
            args["version"] = mine[name]
        elif name in inherited:
            args["version"] = mine[name] = inherited[name]
        elif not _is_other_rank():
            args["version"] = mine[name] = claim(root)
    if mine and not _is_other_rank():
        os.environ[ENV] = json.dumps({"pid": os.getpid(), "versions": mine})


def claim(root: Path) -> int:
    """Create ``root/version_N`` for the smallest free N above every existing one; returns N."""
    _make_parents(root)
    n = next_version(root)
    while True:
        path = root / f"version_{n}"
        try:
            path.mkdir()
        except FileExistsError:
            n += 1
            continue
        _claimed.append(path)
        return n


def next_version(root: Path) -> int:
    """One more than the largest ``version_N`` in ``root`` (0 when there is none), as Lightning counts."""
    numbers = [int(p.name[len("version_"):]) for p in root.glob("version_*")
               if p.name[len("version_"):].isdigit()] if root.is_dir() else []
    return max(numbers, default=-1) + 1


def forget_claims() -> None:
    """Drop this process's claims from the environment once its run is over, so that no later process it starts
    (in a program that runs lmforge more than once) takes them."""
    try:
        payload = json.loads(os.environ.get(ENV, "") or "{}")
    except ValueError:
        payload = {}
    if isinstance(payload, dict) and payload.get("pid") == os.getpid():
        os.environ.pop(ENV, None)


def release_unused() -> None:
    """Remove the directories this process claimed and that are still empty (the run failed before writing)."""
    while _claimed:
        path = _claimed.pop()
        try:
            path.rmdir()
        except OSError:  # not empty (the run wrote), or already gone
            pass


def _make_parents(root: Path) -> None:
    missing = []
    for parent in [root, *root.parents]:
        if parent.exists():
            break
        missing.append(parent)
    root.mkdir(parents=True, exist_ok=True)
    for parent in reversed(missing):
        _claimed.append(parent)


def _refuse_taken(path: Path, key: str, version: Any) -> None:
    if not path.is_dir():
        return
    held = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    if held:
        shown = ", ".join(held[:6]) + (", ..." if len(held) > 6 else "")
        raise RunDirectoryTaken(
            f"{key}={version}: {path} already holds a run ({shown}); lmforge does not write a second run into it "
            "(the CSV logger would delete its metrics.csv, and checkpoints would mix). Leave the version unset to "
            "get a new version_N (a resumed run continues from --ckpt_path in a new version), or move that run away."
        )


def _versioned_loggers(config: Any) -> list[tuple[str, Any, Path]]:
    """``(recipe key, init_args, <save_dir>/<name>)`` of each CSV/TensorBoard logger in the parsed recipe."""
    trainer = config.get("trainer") if config is not None else None
    logger = trainer.get("logger") if trainer is not None else None
    specs = logger if isinstance(logger, list) else [logger]
    found = []
    for i, spec in enumerate(specs):
        if not hasattr(spec, "get") or not isinstance(spec.get("class_path"), str):
            continue
        if spec["class_path"].rsplit(".", 1)[-1] not in VERSIONED_LOGGERS or spec.get("init_args") is None:
            continue
        args = spec["init_args"]
        key = "trainer.logger" + (f"[{i}]" if isinstance(logger, list) else "") + ".init_args"
        save_dir = args.get("save_dir") or trainer.get("default_root_dir") or "."
        name = args.get("name")
        name = "lightning_logs" if name is None and "name" not in args else name
        root = Path(str(save_dir)).expanduser() / (str(name) if name else "")
        found.append((key, args, root))
    return found


def _inherited() -> dict[str, int]:
    """The claims of the process that started this one (a DDP launcher), if it did."""
    try:
        payload = json.loads(os.environ.get(ENV, "") or "{}")
    except ValueError:
        return {}
    if not isinstance(payload, dict) or payload.get("pid") != os.getppid():
        return {}
    return {str(k): int(v) for k, v in (payload.get("versions") or {}).items()}


def _is_other_rank() -> bool:
    return any(os.environ.get(v, "0").strip() not in ("", "0") for v in _RANK_VARIABLES)
