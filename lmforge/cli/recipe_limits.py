"""Bounds on the YAML a recipe may expand to, checked before anything is built from it.

YAML anchors and aliases (``&a`` / ``*a``) let a one-kilobyte file describe a document of a billion
values (the "billion laughs"): PyYAML builds it cheaply, with shared references, but everything after
(jsonargparse's parsing, merging and dumping) walks every value, for minutes and gigabytes.

`check_document` composes a text's node graph (linear in its size) and counts the values it would expand
to, sharing nothing. A document larger than `MAX_VALUES` values or `MAX_BYTES` bytes, one that refers to
itself, or one nested deeper than Python can follow, is refused with `RecipeTooLarge` before any value is
built. The ``--config`` files and the values on the command line are checked before Lightning is even
imported (`check_config_files`), and every YAML text jsonargparse's loader reads later (config files that a
recipe names) goes through `bounded_yaml_loader`. The bundled recipes hold a few hundred values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

#: Values (scalars, lists and mappings, counted as written out with every alias expanded) a recipe may hold.
MAX_VALUES = 100_000
#: Bytes of YAML text one load may read.
MAX_BYTES = 10_000_000


class RecipeTooLarge(yaml.YAMLError, ValueError):
    """A recipe document over the bounds of this module."""


def check_document(text: str) -> None:
    """Refuse ``text`` when it is too long or would expand beyond `MAX_VALUES` values."""
    if not isinstance(text, str):
        return
    if len(text) > MAX_BYTES:
        raise RecipeTooLarge(f"the recipe text is {len(text):,} characters long, more than the {MAX_BYTES:,} a "
                             "recipe may be. Refusing to read it.")
    if "&" not in text:  # no anchors, no aliases: it holds no more values than its length allows (MAX_BYTES)
        return
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except RecursionError:
        raise RecipeTooLarge("the recipe is nested deeper than it can be read. Refusing to read it.") from None
    except yaml.YAMLError:
        return  # not valid YAML: the real loader reports it with its own message
    sizes: dict[int, int] = {}
    for node in nodes:
        if node is not None:
            _expanded_size(node, sizes, set())


def _expanded_size(node: yaml.Node, sizes: dict[int, int], path: set[int]) -> int:
    """Values ``node`` stands for with every alias expanded; memoised by node, so shared nodes cost once."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in path:
        raise RecipeTooLarge("the recipe refers to itself through a YAML alias (an anchor used inside its own "
                             "value), so it has no end. Refusing to read it.")
    path.add(id(node))
    total = 1
    try:
        if isinstance(node, yaml.SequenceNode):
            for child in node.value:
                total += _expanded_size(child, sizes, path)
                _check(total)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                total += _expanded_size(key, sizes, path) + _expanded_size(value, sizes, path)
                _check(total)
    except RecursionError:
        raise RecipeTooLarge("the recipe is nested deeper than it can be read. Refusing to read it.") from None
    path.discard(id(node))
    sizes[id(node)] = total
    return total


def _check(total: int) -> None:
    if total > MAX_VALUES:
        raise RecipeTooLarge(
            f"the recipe expands to more than {MAX_VALUES:,} values through YAML aliases (&anchor / *alias), far "
            "more than any recipe needs: a document built to exhaust memory (\"billion laughs\"). Refusing to "
            "read it; nothing was built."
        )


def bounded_yaml_loader(load: Callable[[str], Any]) -> Callable[[str], Any]:
    """``load`` (jsonargparse's YAML loader), preceded by `check_document`."""

    def bounded(stream: str) -> Any:
        check_document(stream)
        return load(stream)

    bounded.lmforge_bounded = True  # type: ignore[attr-defined]
    return bounded


def install() -> None:
    """Make every YAML load of jsonargparse (hence of LightningCLI) bounded; idempotent."""
    import jsonargparse

    current = jsonargparse.get_loader("yaml")
    if not getattr(current, "lmforge_bounded", False):
        jsonargparse.set_loader("yaml", bounded_yaml_loader(current), (yaml.YAMLError,))


def check_config_files(argv: list[str]) -> None:
    """`check_document` on each ``--config`` file and each value of the command line, naming the file or the option
    when one is refused. (jsonargparse reads a typed option's value with its own YAML loader, which
    `install` does not reach, so command-line values are checked here.)"""
    from pathlib import Path

    option = "the command line"
    for arg in argv:
        name, _, value = arg.partition("=") if arg.startswith("--") and "=" in arg else (option, "", arg)
        if arg.startswith("--") and "=" not in arg:
            option = arg
            continue
        try:
            check_document(value)
        except RecipeTooLarge as exc:
            raise RecipeTooLarge(f"{name}: {exc}") from None

    files = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-c", "--config")]
    files += [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    for name in files:
        path = Path(name)
        if not path.is_file():
            continue
        if path.stat().st_size > MAX_BYTES:
            raise RecipeTooLarge(f"--config {name}: {path.stat().st_size:,} bytes, more than the {MAX_BYTES:,} a "
                                 "recipe may be. Refusing to read it.")
        try:
            check_document(path.read_text(encoding="utf-8"))
        except RecipeTooLarge as exc:
            raise RecipeTooLarge(f"--config {name}: {exc}") from None
        except UnicodeDecodeError:
            continue  # the parser reports it
