"""What lmforge can say about a plugin class from its code alone: its metadata, its init arguments
(with their help from the docstring) and a recipe snippet. ``lmforge plugins show`` prints them and
``lmforge plugins new`` writes them into a new package's README.

Imported only by commands that already have the plugin class in hand, so importing `lmforge.core.plugins`
(and torch) here costs nothing extra.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import yaml

from lmforge.core.hooks import HOOK_BY_NAME, KIND_BY_NAME, RECIPE_KEYS
from lmforge.core.plugins import KIND_BASES, Plugin, declared, implemented_hooks, objective_task

REQUIRED = inspect.Parameter.empty


def metadata_lines(cls: type) -> list[str]:
    """The metadata ``cls`` declares beyond the defaults, one ``label: values`` each."""
    lines = []
    if getattr(cls, "kind", "") == "objective":
        lines.append(f"task: {objective_task(cls)}")
    if cls.supported_objectives is not None:
        lines.append(f"objectives: {', '.join(cls.supported_objectives)}")
    for attr, label in (("requires", "requires"), ("provides", "provides"), ("runs_after", "runs after"),
                        ("runs_before", "runs before"), ("conflicts_with", "conflicts with")):
        value = declared(cls, attr) if attr in ("runs_after", "runs_before") else getattr(cls, attr)
        if value and value != getattr(Plugin, attr) and not (attr == "provides" and _inherited_default(cls, attr)):
            lines.append(f"{label}: {', '.join(sorted(value) if isinstance(value, frozenset) else value)}")
    if cls.needs_hidden_states and "hidden_states" not in cls.requires:
        lines.append("requires: hidden_states")
    return lines


def _inherited_default(cls: type, attr: str) -> bool:
    """Whether ``cls`` keeps its kind's default for ``attr`` (a Distiller's ``provides``)."""
    base = KIND_BASES.get(getattr(cls, "kind", ""))
    return base is not None and getattr(cls, attr) == getattr(base, attr)


@dataclass(frozen=True)
class Argument:
    """One argument of a plugin's ``__init__``: what a recipe's ``init_args`` may set."""

    name: str
    annotation: str
    default: Any = REQUIRED
    help: str = ""

    @property
    def line(self) -> str:
        default = "" if self.default is REQUIRED else f" = {self.default!r}"
        return f"{self.name}: {self.annotation}{default}" + (f"\n      {self.help}" if self.help else "")


def init_arguments(cls: type) -> list[Argument]:
    """The arguments of ``cls.__init__``, with their help from the class's (or ``__init__``'s) Google-style
    docstring, which is also what ``lmforge fit --help`` shows."""
    helps = _argument_help(cls)
    out = []
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = param.annotation
        if annotation is inspect.Parameter.empty:
            text = "Any"
        else:
            text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
        default = REQUIRED if param.default is inspect.Parameter.empty else param.default
        out.append(Argument(name, text, default, helps.get(name, "")))
    return out


def _argument_help(cls: type) -> dict[str, str]:
    try:
        import docstring_parser
    except ImportError:  # comes with jsonargparse[signatures]; without it, no help text
        return {}
    helps: dict[str, str] = {}
    for doc in (cls.__init__.__doc__, cls.__doc__):
        if doc:
            for param in docstring_parser.parse(doc).params:
                helps.setdefault(param.arg_name, " ".join((param.description or "").split()))
    return helps


def strip_args_section(doc: str) -> str:
    """The docstring without its ``Args:`` section (the arguments are listed separately)."""
    out, skipping = [], False
    for line in doc.splitlines():
        if line.strip() in ("Args:", "Arguments:"):
            skipping = True
            continue
        if skipping and line and not line.startswith(" "):
            skipping = False
        if not skipping:
            out.append(line)
    return "\n".join(out).strip()


def recipe_snippet(kind: str, name: str, arguments: list[Argument]) -> list[str]:
    """A YAML fragment that adds the plugin to a recipe with its defaults (required arguments to fill in)."""
    def value(arg: Argument) -> Any:
        if arg.default is REQUIRED:
            return "<required>"
        if isinstance(arg.default, tuple):
            return list(arg.default)
        plain = (int, float, str, bool, list, dict, type(None))
        return arg.default if isinstance(arg.default, plain) else repr(arg.default)

    entry: dict[str, Any] = {"class_path": name}
    if arguments:
        entry["init_args"] = {arg.name: value(arg) for arg in arguments}
    key = RECIPE_KEYS[kind]
    text = yaml.safe_dump({"model": {key: [entry] if KIND_BY_NAME[kind].many else entry}},
                          sort_keys=False, default_flow_style=False)
    return ["  " + line for line in text.splitlines()]


def describe_plugin(info: Any) -> str:
    """What ``lmforge plugins show`` prints for one registered plugin."""
    cls = info.cls
    doc = inspect.getdoc(cls) or ""
    lines = [f"{info.name}  ({info.kind.replace('_', ' ')}, from {info.dist} {info.version})",
             f"class: {info.qualname}", ""]
    lines += [strip_args_section(doc), ""] if doc else []
    metadata = metadata_lines(cls)
    if info.kind != "objective" and cls.supported_objectives is None:
        metadata.insert(0, "objectives: any")
    lines += metadata
    hooks = implemented_hooks(cls)
    if "process_text" in hooks:
        lines.append(f"splits (process_text): {', '.join(cls.splits)}")
    lines += ["", "hooks:"]
    lines += [f"  {hook:<22}{HOOK_BY_NAME[hook].stage} stage: {HOOK_BY_NAME[hook].when.replace('``', '')}"
              for hook in hooks]
    arguments = init_arguments(cls)
    lines += ["", "init arguments (recipe init_args):"]
    lines += [f"  {arg.line}" for arg in arguments] or ["  none"]
    lines += ["", "in a recipe:", *recipe_snippet(info.kind, info.name, arguments)]
    return "\n".join(lines)
