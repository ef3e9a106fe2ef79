"""Safe mode: a recipe may name only trusted classes and functions.

A recipe is code. ``class_path`` names any importable class, and an argument typed as a callable takes any
importable function: ``lr_scheduler: {class_path: LambdaLR, init_args: {lr_lambda: os.umask}}`` calls
``os.umask`` every step. Running someone's recipe is running their Python script.

On a shared machine or a CI runner that runs recipes it did not write, safe mode narrows that down: every
class and function a recipe names must come from

- ``lmforge`` itself and the installed lmforge plugins (their registered classes),
- ``torch.optim`` (optimizers and ``torch.optim.lr_scheduler``),
- ``lightning.pytorch`` callbacks, loggers, strategies and plugins (and ``pytorch_lightning``'s),
- what ``LMFORGE_TRUSTED_CLASSES`` adds: comma-separated dotted names, each trusting itself and what lies
  under it (``mypkg`` trusts ``mypkg.models.Net``; ``math.cos`` trusts that function only).

Safe mode is on with ``--safe`` on the command line, or ``LMFORGE_SAFE=1`` or a non-empty
``LMFORGE_TRUSTED_CLASSES`` in the environment; a recipe cannot turn it off. Its checks:

1. before any recipe value is parsed (`check_recipe_texts`, from `lmforge.cli.main`, without importing
   Lightning): every ``class_path`` and every string that reads as a dotted import path of an installed module,
   in each ``--config`` file and each command-line value, so that no untrusted module is even imported;
2. after parsing, before anything is built (`check_parsed`): the resolved recipe, checkpoint hyperparameters
   included, with short names (``AdamW``) resolved to their full paths and callables to their qualified names;
3. ``model.backbone.trust_remote_code`` stays off.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SAFE_FLAG = "--safe"
SAFE_ENV = "LMFORGE_SAFE"
TRUSTED_ENV = "LMFORGE_TRUSTED_CLASSES"
#: Always trusted in safe mode, besides the registered plugin classes.
TRUSTED = ("lmforge", "torch.optim", "lightning.pytorch.callbacks", "lightning.pytorch.loggers",
           "lightning.pytorch.strategies", "lightning.pytorch.plugins", "pytorch_lightning.callbacks",
           "pytorch_lightning.loggers", "pytorch_lightning.strategies", "pytorch_lightning.plugins")
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


class UntrustedRecipe(ValueError):
    """A recipe names code outside the trusted set, in safe mode."""


def safe_mode() -> bool:
    return (os.environ.get(SAFE_ENV, "").strip().lower() in ("1", "true", "yes")
            or bool(os.environ.get(TRUSTED_ENV, "").strip()))


def trusted_names() -> tuple[str, ...]:
    extra = [n.strip().rstrip(".") for n in os.environ.get(TRUSTED_ENV, "").split(",") if n.strip()]
    return (*TRUSTED, *extra)


def is_trusted(name: str, plugin_classes: set[str] | None = None) -> bool:
    if plugin_classes and name in plugin_classes:
        return True
    return any(name == t or name.startswith(t + ".") for t in trusted_names())


def _plugin_classes() -> set[str]:
    from lmforge.core.registry import registry

    return {f"{info.cls.__module__}.{info.cls.__qualname__}" for info in registry().all()}


def check_recipe_texts(argv: list[str]) -> None:
    """Check 1 of the module docstring, on the command line (``--config`` already resolved to files)."""
    import yaml

    from lmforge.cli.recipe_limits import check_document

    found: list[tuple[str, str]] = []
    for where, text in _command_line_values(argv):
        check_document(text)
        try:
            documents = list(yaml.safe_load_all(text))
        except yaml.YAMLError:
            documents = [text]
        for document in documents:
            found += [(f"{where}: {key}" if key else where, name) for key, name in _import_strings(document, "")]
    _refuse([(w, n) for w, n in found if not is_trusted(n, _plugin_classes())])


def _command_line_values(argv: list[str]) -> Iterator[tuple[str, str]]:
    """``(where, YAML text)`` of each ``--config`` file and each option value on the command line."""
    i = 0
    while i < len(argv):
        arg, value = argv[i], None
        if arg.startswith("--") and "=" in arg:
            arg, value = arg.split("=", 1)
        elif arg in ("-c", "--config") or arg.startswith("--"):
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                i += 1
                value = argv[i]
        i += 1
        if value is None:
            continue
        if arg in ("-c", "--config") and Path(value).is_file():
            yield value, Path(value).read_text(encoding="utf-8")
        else:
            yield arg, value


def check_parsed(config: dict[str, Any]) -> None:
    """Check 2 (and 3) of the module docstring, on a parsed recipe (a subcommand's config as a dict)."""
    plugins = _plugin_classes()
    trusted_objects = _trusted_objects()
    found = [(key, name) for key, name, obj in _parsed_names(config, "")
             if not is_trusted(name, plugins) and id(obj) not in trusted_objects]
    backbone = ((config.get("model") or {}).get("backbone") or {}) if isinstance(config.get("model"), dict) else {}
    if isinstance(backbone, dict) and backbone.get("trust_remote_code"):
        found.append(("model.backbone.trust_remote_code", "true (a pretrained directory's own code)"))
    _refuse(found)


def _parsed_names(node: Any, key: str) -> Iterator[tuple[str, str, Any]]:
    """`_import_strings` of a parsed recipe, with the object a callable value is (None for names)."""
    for where, name in _import_strings(node, key):
        yield where, name, _lookup(node, where[len(key) + 1:] if key else where)


def _lookup(node: Any, key: str) -> Any:
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        if part.startswith("["):
            node = node[int(part[1:-1])] if isinstance(node, (list, tuple)) else None
        else:
            node = node.get(part) if isinstance(node, dict) else None
    return node if callable(node) else None


def _trusted_objects() -> set[int]:
    """Ids of the functions and classes that the trusted names name exactly (``os.umask`` is ``posix.umask``)."""
    import importlib

    found = set()
    for name in trusted_names():
        module_name, _, attr = name.rpartition(".")
        if not module_name:
            continue
        try:
            found.add(id(getattr(importlib.import_module(module_name), attr)))
        except (ImportError, AttributeError, ValueError):
            continue
    return found


def _import_strings(node: Any, key: str) -> Iterator[tuple[str, str]]:
    """``(key, dotted name)`` of every class or function a recipe (parsed or raw) names."""
    if isinstance(node, dict):
        for name, value in node.items():
            child = f"{key}.{name}" if key else str(name)
            if name == "class_path" and isinstance(value, str):
                if "." in value:
                    yield child, value
                continue
            yield from _import_strings(value, child)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _import_strings(value, f"{key}[{i}]")
    elif isinstance(node, str):
        if _DOTTED.match(node) and _importable(node.split(".", 1)[0]) and not Path(node).exists():
            yield key, node
    elif callable(node) and hasattr(node, "__qualname__"):
        yield key, f"{getattr(node, '__module__', '?')}.{node.__qualname__}"


def _importable(top: str) -> bool:
    try:
        return importlib.util.find_spec(top) is not None  # a top-level name: nothing is imported
    except (ImportError, ValueError):
        return False


def _refuse(found: list[tuple[str, str]]) -> None:
    if not found:
        return
    lines = "\n  ".join(f"{where}: {name}" for where, name in dict.fromkeys(found))
    raise UntrustedRecipe(
        f"safe mode: the recipe names code outside the trusted set:\n  {lines}\nIn safe mode a recipe may name "
        "classes and functions of lmforge and its installed plugins, torch.optim, and lightning.pytorch's "
        f"callbacks, loggers, strategies and plugins. Whoever runs lmforge can trust more with {TRUSTED_ENV}="
        "name,package,... (a recipe cannot)."
    )
