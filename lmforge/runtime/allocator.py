"""Host memory allocator settings for training processes (glibc ``malloc`` on Linux).

Why this exists: a training step on the CPU allocates and frees the same large
buffers every step (logits, activations and their gradients: tens of MB for
the quickstart model). glibc's default policy returns freed memory at the top
of the heap to the kernel once more than ``M_TRIM_THRESHOLD`` is free, and
serves blocks above a moving ``M_MMAP_THRESHOLD`` with fresh ``mmap`` calls, so
the next step faults the same pages back in and the kernel zeroes them again.
Measured on the quickstart model (2 CPU cores, 1 torch thread; see
docs/performance.md): ~0.9 M page faults per 40 steps and 10-15 % of the step
time in the kernel under the defaults, against ~0.18 M with the settings below.

PyTorch's CPU tuning guide recommends ``LD_PRELOAD``-ing jemalloc or tcmalloc
for the same reason; that needs a launcher and an extra library, so lmforge
sets the two glibc knobs itself with ``mallopt`` when a training command
starts: blocks below 32 MB (glibc's largest mmap threshold on 64-bit) come
from the heap, and up to 256 MB of free heap is kept for the next step.
Blocks of 32 MB and more are mapped and unmapped as glibc always does.

Nothing changes when the user has chosen already (``MALLOC_*`` variables,
``GLIBC_TUNABLES`` with ``glibc.malloc`` settings, or another allocator in
``LD_PRELOAD``), off Linux/glibc, or with ``LMFORGE_TUNE_MALLOC=0``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys

log = logging.getLogger(__name__)

ENV = "LMFORGE_TUNE_MALLOC"
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit glibc: mallopt refuses more
TRIM_THRESHOLD = 256 << 20


def user_choice() -> str | None:
    """Why the allocator is left alone (the user chose a setting or an allocator), or None."""
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return f"{ENV}=0"
    for key in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_"):
        if key in os.environ:
            return f"{key} is set"
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES sets glibc.malloc"
    preload = os.environ.get("LD_PRELOAD", "")
    for name in ("jemalloc", "tcmalloc", "mimalloc"):
        if name in preload:
            return f"LD_PRELOAD loads {name}"
    return None


def tune_malloc() -> bool:
    """Apply the settings above to this process (and the processes it forks); True when applied."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    reason = user_choice()
    if reason is not None:
        log.debug("host allocator left as configured: %s", reason)
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        # Order matters: setting either knob turns off glibc's dynamic thresholds, and a fixed trim
        # threshold with the default 128 KB mmap threshold would map every large block.
        ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    except (OSError, AttributeError):
        return False
    return ok
