"""Bundled recipes: YAML files shipped inside the package, found by name."""

from __future__ import annotations

import difflib

from importlib import resources
from pathlib import Path


def recipes_dir() -> Path:
    return Path(str(resources.files("lmforge") / "recipes"))


def bundled_recipes() -> dict[str, Path]:
    """Recipe name -> path; overlays are named ``overlays/<name>``."""
    root = recipes_dir()
    return {str(p.relative_to(root).with_suffix("")): p for p in sorted(root.rglob("*.yaml"))}


def describe(path: Path) -> str:
    """The first line of a recipe's header comment."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            text = line.lstrip("#").strip()
            if text:
                return text
        elif line.strip():
            break
    return ""


def resolve_recipe(value: str) -> str:
    """A ``--config`` value: an existing file as given, else a bundled recipe's path."""
    if Path(value).is_file():
        return value
    recipes = bundled_recipes()
    name = value[: -len(".yaml")] if value.endswith(".yaml") else value
    if name in recipes:
        return str(recipes[name])
    near = difflib.get_close_matches(name, list(recipes), n=1, cutoff=0.6)
    hint = f" Did you mean {near[0]!r}?" if near else ""
    raise ValueError(
        f"--config {value}: neither a file nor a bundled recipe.{hint} Bundled recipes: {', '.join(recipes)} "
        "(see `lmforge recipes`)."
    )
