"""The ``lmforge`` command.

``fit``/``validate``/``test``/``predict`` are LightningCLI subcommands over
`LanguageModel` and a DataModule (a `BaseTextData` subclass: `TextData`,
`LabeledTextData`); ``recipes``, ``plugins`` and ``export`` are lmforge's own
and import only what they need. ``lmforge predict MODEL --input FILE ...``
(a path first, not an option) is lmforge's prediction tool; ``lmforge predict
--config ...`` stays Lightning's subcommand.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Sequence
from typing import Any

TOOLS = ("recipes", "plugins", "export")
LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TOOLS:
        from lmforge.core import commands

        return getattr(commands, argv[0])(argv[1:])
    if len(argv) > 1 and argv[0] == "predict" and not argv[1].startswith("-"):
        from lmforge.core import commands

        return commands.predict(argv[1:])
    if argv and argv[0] in ("-V", "--version"):
        from lmforge import __version__

        print(f"lmforge {__version__}")
        return 0
    try:
        argv = resolve_config_args(argv)
    except ValueError as exc:
        print(f"lmforge: error: {exc}", file=sys.stderr)
        return 2
    sys.argv = [sys.argv[0], *argv]  # LightningCLI reads sys.argv; recipe names are now paths
    run_cli()
    return 0


def resolve_config_args(argv: list[str]) -> list[str]:
    """Replace ``--config NAME`` with the bundled recipe's path when NAME is not a file."""
    from lmforge.core.recipes import resolve_recipe

    out: list[str] = []
    expect_config = False
    for arg in argv:
        if expect_config:
            out.append(resolve_recipe(arg))
            expect_config = False
        elif arg in ("-c", "--config"):
            out.append(arg)
            expect_config = True
        elif arg.startswith("--config="):
            out.append("--config=" + resolve_recipe(arg.split("=", 1)[1]))
        else:
            out.append(arg)
    return out


def run_cli(args: list[str] | None = None, run: bool = True) -> Any:
    """Build (and by default run) the Lightning CLI; returns the CLI object."""
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, LRSchedulerTypeTuple
    from torch.optim import Optimizer

    from lmforge.core import labeled_data  # noqa: F401  (so `class_path: LabeledTextData` resolves)
    from lmforge.core.data import BaseTextData
    from lmforge.core.module import LanguageModel
    from lmforge.core.registry import registry

    plugins = registry()  # import every plugin class so short names resolve

    class RecipeParser(LightningArgumentParser):
        """Adds what a user needs to fix a recipe to jsonargparse's error messages."""

        cli: LightningCLI | None = None

        def error(self, message: str, *args: Any, **kwargs: Any) -> Any:
            return super().error(explain_error(message, self.valid_keys(), plugins), *args, **kwargs)

        def valid_keys(self) -> list[str]:
            parsers = getattr(self.cli, "_subcommand_parsers", None) or {}
            if not parsers:
                return list(self.get_defaults().keys())
            return sorted({k for p in parsers.values() for k in p.get_defaults().keys()})

    class LMForgeCLI(LightningCLI):
        def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
            parser = super().init_parser(**kwargs)
            parser.cli = self
            return parser

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            # The recipe's top-level optimizer/lr_scheduler are handed to the model, which builds them
            # in configure_optimizers, after configure_model has created the backbone's parameters.
            parser.add_optimizer_args((Optimizer,))
            parser.add_lr_scheduler_args(LRSchedulerTypeTuple)
            parser.link_arguments("optimizer", "model.optimizer", compute_fn=_as_dict)
            parser.link_arguments("lr_scheduler", "model.lr_scheduler", compute_fn=_as_dict)

    return LMForgeCLI(
        LanguageModel,
        BaseTextData,
        subclass_mode_data=True,
        parser_class=RecipeParser,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        parser_kwargs={
            "default_config_files": [],
            "description": "Train language models with plugins. Other commands: recipes, plugins, export, "
                           "predict MODEL --input FILE --output FILE.",
            **{cmd: {"default_config_files": []} for cmd in LIGHTNING_SUBCOMMANDS},
        },
        args=args,
        run=run,
    )


def _as_dict(init: Any) -> dict[str, Any] | None:
    return init.as_dict() if hasattr(init, "as_dict") else init


#: Recipe keys under ``model`` that hold plugins, and their kind.
PLUGIN_KEYS = {
    "objective": "objective",
    "regularizers": "regularizer",
    "augmenters": "augmenter",
    "bias_mitigators": "bias_mitigator",
    "distiller": "distiller",
}


def explain_error(message: str, valid_keys: list[str], plugins: Any) -> str:
    """Put what the user must change in front of a jsonargparse error."""
    from lmforge.core.registry import unknown_plugin_message

    hints: list[str] = []
    group = re.search(r'Parser key "model\.(\w+)"', message)
    if group and group.group(1) in PLUGIN_KEYS and "Problem with given class_path" not in message:
        name = re.search(r"Import path (\S+)|dot import path string: (\S+)|Given value: (\S+)", message)
        given = next((g for g in name.groups() if g), "?") if name else "?"
        kind = PLUGIN_KEYS[group.group(1)]
        hints.append(f"model.{group.group(1)}: {unknown_plugin_message(kind, given.split('.')[-1], plugins)}")
    key = re.search(r"does not accept option '([\w.]+)'", message)
    if key:
        near = difflib.get_close_matches(key.group(1), valid_keys, n=2, cutoff=0.6)
        hint = f"Unknown recipe key {key.group(1)!r}."
        hints.append(hint + (f" Did you mean {' or '.join(repr(n) for n in near)}?" if near else ""))
    option = re.search(r"class_path '([\w.]+)':\s*Option '(\w+)' is not accepted", message)
    if option:
        hints.append(_unknown_argument_hint(*option.groups()))
    return "\n".join([*hints, message]) if hints else message


def _unknown_argument_hint(class_path: str, option: str) -> str:
    import importlib
    import inspect

    module_name, _, class_name = class_path.rpartition(".")
    try:
        params = [p for p in inspect.signature(getattr(importlib.import_module(module_name), class_name)).parameters
                  if p not in ("self", "args", "kwargs")]
    except (ImportError, AttributeError, ValueError):
        return f"{class_name} has no argument {option!r}."
    near = difflib.get_close_matches(option, params, n=1, cutoff=0.6)
    hint = f"{class_name} has no argument {option!r}" + (f"; did you mean {near[0]!r}?" if near else ".")
    return hint + f" Its arguments: {', '.join(params)}."
