"""Which exceptions a training command reports as a message, first and alone, and which keep their traceback.

A user error (a recipe key, a plugin, a data file, a checkpoint) prints ``lmforge: error: <message>`` and exits
with `USER_ERROR` (2), without a traceback: lmforge raises such errors on purpose, as ``ValueError``,
``FileNotFoundError`` (or their subclasses, e.g. ``DataFileError``) or ``ImportError`` from its own code, with a
message that says what to change. A run that lmforge stops on purpose (a NaN loss, non-finite weights, a full
disk) prints its message and exits 1. Anything else is a bug and keeps its traceback, as does everything when
``LMFORGE_DEBUG=1`` (or ``--debug``) is set.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

#: Exit codes: a user error (as argparse), and a run stopped by SIGTERM (128 + 15, what schedulers requeue).
USER_ERROR = 2
RUN_STOPPED = 1
PREEMPTED = 143
DEBUG_ENV = "LMFORGE_DEBUG"

_PACKAGE = Path(__file__).resolve().parents[1]  # lmforge/


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _raised_in_lmforge(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is lmforge's own code (a ``raise`` lmforge wrote)."""
    tb: TracebackType | None = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    try:
        return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(_PACKAGE)
    except (OSError, ValueError):
        return False


def classify(exc: BaseException) -> int | None:
    """The exit code to report ``exc`` with, as a message alone; None when it is a bug (keep the traceback)."""
    from lmforge.core.module import NonFiniteLossError, NonFiniteWeightsError
    from lmforge.core.plugin_checks import PluginCompatibilityError
    from lmforge.runtime.checkpoint_io import CheckpointWriteError

    from lightning.fabric.utilities.exceptions import MisconfigurationException

    if isinstance(exc, (PluginCompatibilityError, MisconfigurationException)):  # the recipe's plugins, or trainer
        return USER_ERROR
    if isinstance(exc, (NonFiniteLossError, NonFiniteWeightsError, CheckpointWriteError)):
        return RUN_STOPPED
    if isinstance(exc, (ValueError, FileNotFoundError, ImportError)) and _raised_in_lmforge(exc):
        return USER_ERROR
    return None
