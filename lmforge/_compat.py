"""Import paths of lmforge 0.1 that recipes and saved configs name, kept working until lmforge 0.3.

lmforge 0.2 split the flat ``lmforge.core`` into the host (`lmforge.core`), the run
infrastructure (`lmforge.runtime`) and the commands (`lmforge.cli`). A run's saved
``config.yaml`` and users' own overlays name classes by their full import path
(``lmforge.core.observe.TokenThroughput``, ``lmforge.core.sharding.FSDP2Strategy``), so
those paths still resolve, to the very same objects (never a second copy of a class),
with a ``DeprecationWarning`` that names the new path.

Whole modules that moved are served by a finder placed first on ``sys.meta_path``;
classes that left a module which still exists (`lmforge.core.sharding`) by that
module's ``__getattr__``, through `moved_attribute`. The table is all there is:
nothing here is imported statically, so the layer contracts see no edge.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Any

#: old module -> new module
MOVED_MODULES = {
    "lmforge.core.labeled_data": "lmforge.core.data.labeled",
    "lmforge.core.observe": "lmforge.runtime.observe",
    "lmforge.core.observe.run_config": "lmforge.runtime.observe.run_config",
    "lmforge.core.observe.samples": "lmforge.runtime.observe.samples",
    "lmforge.core.observe.throughput": "lmforge.runtime.observe.throughput",
    "lmforge.core.observe.wandb": "lmforge.runtime.observe.wandb",
    "lmforge.core.preemption": "lmforge.runtime.preemption",
}
#: old module -> {name: new module}, for modules that still exist
MOVED_NAMES = {
    "lmforge.core.sharding": {"BlockFSDPStrategy": "lmforge.runtime.strategies",
                              "FSDP2Strategy": "lmforge.runtime.strategies"},
}
REMOVED_IN = "0.3"


def _warn(old: str, new: str) -> None:
    warnings.warn(f"{old} moved to {new} in lmforge 0.2; the old path works until lmforge {REMOVED_IN}. "
                  "Update the recipe or import (docs/architecture.md, 'Paths that moved in 0.2').",
                  DeprecationWarning, stacklevel=3)


def moved_attribute(module: str, name: str) -> Any:
    """``module.name`` for a class that moved out of ``module``; AttributeError for any other name."""
    target = MOVED_NAMES.get(module, {}).get(name)
    if target is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    _warn(f"{module}.{name}", f"{target}.{name}")
    return getattr(importlib.import_module(target), name)


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves each old module name with the new module itself."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        _warn(spec.name, MOVED_MODULES[spec.name])
        return importlib.import_module(MOVED_MODULES[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """The new module is already executed."""


def install() -> None:
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedModules())
