"""``lmforge plugins``: list the registered plugins, show one, or scaffold a new plugin package.

    lmforge plugins [--kind KIND]            every plugin: kind, name, distribution and version, summary
    lmforge plugins show NAME [--kind KIND]  one plugin: metadata, hooks, init arguments, a recipe snippet
    lmforge plugins new KIND NAME [--dir D]  write a ready-to-edit plugin package (lmforge.testing.scaffold)
"""

from __future__ import annotations

import argparse
import inspect
import sys
from dataclasses import dataclass
from typing import Any

REQUIRED = inspect.Parameter.empty

#: The hooks ``show`` lists, with the stage each runs at (see lmforge.core.plugins).
HOOKS = {
    "process_text": "data stage: rewrites/filters raw examples before tokenization",
    "sample_weights": "data stage: sampling weights of the training documents",
    "setup": "model stage: once the backbone exists",
    "build_backbone_config": "model stage: the HF config before the backbone is built",
    "prepare": "batch stage: every step, on the device",
    "process_batch": "batch stage: every training step, on the device",
    "compute": "loss stage: the objective's loss and metrics",
    "loss": "loss stage: every training step, the plugin's term(s) of the loss",
}
#: The recipe key under ``model`` that holds each kind.
RECIPE_KEYS = {"objective": "objective", "regularizer": "regularizers", "augmenter": "augmenters",
               "bias_mitigator": "bias_mitigators", "distiller": "distiller"}


def main(argv: list[str]) -> int:
    from lmforge.core.registry import GROUPS

    kinds = sorted(GROUPS)
    parser = argparse.ArgumentParser(
        prog="lmforge plugins",
        description="List the registered plugins (built-in and installed), show one, or scaffold a new plugin "
                    "package. `lmforge --plugins A,B ...` loads only the built-ins and A, B.",
    )
    parser.add_argument("--kind", choices=kinds, help="only this kind")
    parser.add_argument("--refresh", action="store_true",
                        help="import and check every plugin again instead of using the cached listing (the cache "
                             "is refreshed by itself when a package or a plugin's source changes)")
    sub = parser.add_subparsers(dest="action")
    show = sub.add_parser("show", help="a plugin's metadata, hooks, init arguments and a recipe snippet")
    show.add_argument("name", help="the plugin's name (its class name), as in a recipe")
    show.add_argument("--kind", dest="show_kind", choices=kinds, help="the kind, when two kinds share the name")
    new = sub.add_parser("new", help="write a ready-to-edit plugin package with tests that use lmforge.testing")
    new.add_argument("new_kind", metavar="KIND", choices=kinds, help=f"one of {', '.join(kinds)}")
    new.add_argument("new_name", metavar="NAME", help="the plugin's class name, CamelCase (e.g. ZLoss)")
    new.add_argument("--dir", help="where to write the package (default: ./lmforge-<name>); must not exist "
                                   "or be empty")
    args = parser.parse_args(argv)
    if args.action == "show":
        return show_plugin(args.name, args.show_kind or args.kind)
    if args.action == "new":
        return new_plugin(args.new_kind, args.new_name, args.dir)
    return list_plugins(args.kind, args.refresh)


def list_plugins(kind: str | None, refresh: bool = False) -> int:
    from lmforge.core.plugin_listing import listing

    found = listing(refresh)
    plugins = [p for p in found["plugins"] if kind in (None, p["kind"])]
    rows = [(p["kind"], p["name"], f"{p['dist']} {p['version']}", p["summary"]) for p in plugins]
    if rows:
        widths = [max(len(r[c]) for r in rows) for c in range(3)]
        indent = " " * (widths[0] + 2)
        for plugin, row in zip(plugins, rows):
            print("  ".join(f"{row[c]:<{widths[c]}}" for c in range(3)) + "  " + row[3])
            if plugin["details"]:
                print(indent + "; ".join(plugin["details"]))
    broken = [b for b in found["broken"] if kind in (None, b["kind"])]
    if broken:
        print("\nBroken plugins (not loaded):")
        for b in broken:
            print(f"  {b['kind']}  {b['name']}  ({b['dist']} {b['version']}): {b['error']}")
    return 0


def metadata_lines(cls: type) -> list[str]:
    """The metadata ``cls`` declares beyond the defaults, one ``label: values`` each."""
    from lmforge.core.plugins import Plugin, objective_task

    lines = []
    if getattr(cls, "kind", "") == "objective":
        lines.append(f"task: {objective_task(cls)}")
    if cls.supported_objectives is not None:
        lines.append(f"objectives: {', '.join(cls.supported_objectives)}")
    for attr, label in (("requires", "requires"), ("provides", "provides"), ("runs_after", "runs after"),
                        ("runs_before", "runs before"), ("conflicts_with", "conflicts with")):
        value = getattr(cls, attr)
        if value and value != getattr(Plugin, attr) and not (attr == "provides" and _inherited_default(cls, attr)):
            lines.append(f"{label}: {', '.join(sorted(value) if isinstance(value, frozenset) else value)}")
    if cls.needs_hidden_states and "hidden_states" not in cls.requires:
        lines.append("requires: hidden_states")
    return lines


def _inherited_default(cls: type, attr: str) -> bool:
    """Whether ``cls`` keeps its kind's default for ``attr`` (a Distiller's ``provides``)."""
    from lmforge.core.plugins import KIND_BASES

    base = KIND_BASES.get(getattr(cls, "kind", ""))
    return base is not None and getattr(cls, attr) == getattr(base, attr)


def show_plugin(name: str, kind: str | None) -> int:
    from lmforge.core.registry import registry, unknown_plugin_message

    reg = registry()
    found = [i for i in reg.find(name) if kind in (None, i.kind)]
    if not found:
        broken = [b for b in reg.broken if b.name == name and kind in (None, b.kind)]
        if broken:
            b = broken[0]
            print(f"lmforge plugins: {b.kind} {name!r} from {b.dist} {b.version} is broken: {b.error}",
                  file=sys.stderr)
        else:
            kinds = [kind] if kind else list(RECIPE_KEYS)
            near = "; ".join(unknown_plugin_message(k, name, reg).split(". ", 1)[1] for k in kinds)
            print(f"lmforge plugins: no plugin {name!r}. {near}", file=sys.stderr)
        return 2
    if len(found) > 1:
        print(f"lmforge plugins: {name!r} is a plugin of several kinds ({', '.join(i.kind for i in found)}); "
              "add --kind.", file=sys.stderr)
        return 2
    print(describe_plugin(found[0]))
    return 0


def describe_plugin(info: Any) -> str:
    """What ``lmforge plugins show`` prints for one registered plugin."""
    cls = info.cls
    doc = inspect.getdoc(cls) or ""
    lines = [f"{info.name}  ({info.kind.replace('_', ' ')}, from {info.dist} {info.version})",
             f"class: {info.qualname}", ""]
    lines += [_strip_args_section(doc), ""] if doc else []
    if info.kind != "objective":
        lines.append(f"objectives: {', '.join(cls.supported_objectives) if cls.supported_objectives else 'any'}")
    lines += metadata_lines(cls)
    if "process_text" in _hooks(cls):
        lines.append(f"splits (process_text): {'train' if info.kind == 'augmenter' else ', '.join(cls.splits)}")
    lines += ["", "hooks:"] + [f"  {hook:<22}{HOOKS[hook]}" for hook in _hooks(cls)]
    arguments = init_arguments(cls)
    lines += ["", "init arguments (recipe init_args):"]
    lines += [f"  {arg.line}" for arg in arguments] or ["  none"]
    lines += ["", "in a recipe:", *recipe_snippet(info.kind, info.name, arguments)]
    return "\n".join(lines)


def _hooks(cls: type) -> list[str]:
    from lmforge.core.plugins import Objective, Plugin

    return [hook for hook in HOOKS if hasattr(cls, hook) and getattr(cls, hook) is not getattr(
        Objective if hook in ("prepare", "compute", "build_backbone_config") else Plugin, hook, None)]


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


def _strip_args_section(doc: str) -> str:
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
    import yaml

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
    text = yaml.safe_dump({"model": {key: entry if key in ("objective", "distiller") else [entry]}},
                          sort_keys=False, default_flow_style=False)
    return ["  " + line for line in text.splitlines()]


def new_plugin(kind: str, name: str, directory: str | None) -> int:
    from lmforge.testing.scaffold import ScaffoldError, write_package

    try:
        root = write_package(kind, name, directory)
    except ScaffoldError as exc:
        print(f"lmforge plugins new: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {root}")
    print(f"next: cd {root} && pip install -e . && pytest")
    return 0
