"""Python's cyclic garbage collector, paused while a training command starts.

Importing torch, Lightning and transformers and parsing a recipe create some 400,000 objects that live as long
as the process. With the collector running, start-up sets off about eight full collections, and each one walks
every object alive, 0.1-0.2 s apiece on 2 CPU cores: 0.65-0.9 s of a 4-5 s start-up (benchmarks/startup.py;
docs/performance.md). So the collector is paused from the command's start until the recipe's classes are built,
and then started again with what start-up made moved out of its reach (``gc.freeze``): later collections, during
data preparation and training, walk only what the run itself allocates. Reference counting frees memory as usual
all along; only reference cycles wait, and only until ``resume``. At the end of the command everything frozen is
handed back to the collector (``gc.unfreeze``), for a process that calls `lmforge.cli.main.main` more than once.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_paused = False


@contextmanager
def paused_during_startup() -> Iterator[None]:
    """Pause the collector for the block, unless it was already off; `resume` ends the pause early."""
    global _paused
    if not gc.isenabled():  # the caller turned it off: theirs to turn on
        yield
        return
    # Garbage from before the command goes first: for a program that calls main() more than once, classes of
    # modules it reloaded would otherwise stay in their bases' __subclasses__() through the pause, and
    # jsonargparse refuses a class name two live classes share. In a fresh `lmforge` process this is cheap:
    # nothing heavy is imported yet.
    gc.collect()
    gc.disable()
    _paused = True
    try:
        yield
    finally:
        resume()
        gc.unfreeze()


def resume() -> None:
    """Start the collector again after a pause, with the objects alive now frozen; a no-op without a pause."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
