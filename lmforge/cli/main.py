"""The ``lmforge`` command.

``fit``/``validate``/``test``/``predict`` are LightningCLI subcommands over
`LanguageModel` and a DataModule (a `BaseTextData` subclass: `TextData` by
default, `LabeledTextData`); ``recipes``, ``plugins``, ``export`` and ``plot``
are lmforge's own and import only what they need: this module and `lmforge.cli.commands`
import neither torch nor Lightning, so ``lmforge --help`` and the tools answer at once, and
`lmforge.cli.training` (LightningCLI) is imported only to train. ``lmforge predict MODEL
--input FILE ...`` (a path first, not an option) is lmforge's prediction tool;
``lmforge predict --config ...`` stays Lightning's subcommand.

``--plugins A,B`` (anywhere on the command line, for any command) loads only
the built-in plugins and the third-party ones named; ``--plugins ""`` loads
the built-ins alone. It sets ``LMFORGE_DISABLE_PLUGIN_AUTOLOAD=1`` and
``LMFORGE_PLUGINS`` before anything reads the registry. ``--debug`` (or
``LMFORGE_DEBUG=1``) shows the traceback of a user error too.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from lmforge import __version__
from lmforge.cli import collector, commands, recipe_limits, trust
from lmforge.cli.commands import LIGHTNING_SUBCOMMANDS, TOOLS, TOOLS_HELP, TRAINING_HELP
from lmforge.cli.errors import DEBUG_ENV, PREEMPTED, USER_ERROR
from lmforge.cli.recipes import resolve_recipe
from lmforge.core.registry import ALLOW_ENV, AUTOLOAD_ENV, registry
from lmforge.runtime.run_paths import ALLOW_FLAG


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in argv:  # a flag of every command, as --plugins: tracebacks of user errors too
        argv = [a for a in argv if a != "--debug"]
        os.environ[DEBUG_ENV] = "1"
    try:
        argv = apply_plugins_flag(argv)
    except ValueError as exc:
        print(f"lmforge: error: {exc}", file=sys.stderr)
        return USER_ERROR
    if not argv or argv[0] in ("-h", "--help"):  # lmforge's own: listing the commands needs no Lightning
        print(top_level_help())
        return 0 if argv else 2
    if argv and argv[0] in TOOLS:
        return commands.tool(argv[0])(argv[1:])
    if len(argv) > 1 and argv[0] == "predict" and not argv[1].startswith("-"):
        return commands.predict(argv[1:])
    if argv and argv[0] not in LIGHTNING_SUBCOMMANDS and not argv[0].startswith("-"):
        command = find_command(argv[0])
        if command is not None:
            return command(argv[1:])
        print(f"lmforge: error: {unknown_command_message(argv[0])}", file=sys.stderr)
        return USER_ERROR
    if argv and argv[0] in ("-V", "--version"):
        print(f"lmforge {__version__}")
        return 0
    allow_outside = ALLOW_FLAG in argv  # a command-line flag only: a recipe cannot grant itself this
    if trust.SAFE_FLAG in argv:  # through the environment, so that the processes of a DDP run inherit it
        os.environ[trust.SAFE_ENV] = "1"
    argv = [a for a in argv if a not in (ALLOW_FLAG, trust.SAFE_FLAG)]
    try:
        argv = resolve_config_args(argv)
        recipe_limits.check_config_files(argv)  # an alias bomb is refused before anything reads it
        if trust.safe_mode():  # before Lightning parses the recipe, and so imports what it names
            trust.check_recipe_texts(argv)
    except ValueError as exc:
        print(f"lmforge: error: {exc}", file=sys.stderr)
        return USER_ERROR
    sys.argv = [sys.argv[0], *argv]  # LightningCLI reads sys.argv; recipe names are now paths
    with collector.paused_during_startup():  # until the run begins: lmforge/cli/collector.py
        from lmforge.cli.training import run_training  # Lightning, torch and every plugin: only to train

        return run_training(argv, allow_outside_run_dir=allow_outside)


def top_level_help() -> str:
    """``lmforge --help``: the commands, without importing Lightning (``lmforge fit --help`` lists recipe keys)."""
    extra = {ep.name: f"from {ep.dist.metadata['Name'] if ep.dist else 'an installed package'}; "
                      f"lmforge {ep.name} --help" for ep in metadata.entry_points(group="lmforge.commands")}
    lines = [f"usage: lmforge COMMAND [options]     (lmforge {__version__})", "",
             "Train language models on PyTorch Lightning with plugins.", "",
             "training (LightningCLI; `lmforge COMMAND --help` lists every recipe key):"]
    width = max(len(name) for name in [*TRAINING_HELP, *TOOLS_HELP, *extra])
    lines += [f"  {name:<{width}}  {text}" for name, text in TRAINING_HELP.items()]
    lines += ["", "tools:"] + [f"  {name:<{width}}  {text}" for name, text in {**TOOLS_HELP, **extra}.items()]
    lines += ["", "options for every command:",
              "  --plugins A,B              load only the built-in plugins and the installed ones named",
              f"  {'--allow_outside_run_dir':<25}  let a recipe write outside the working directory",
              f"  {trust.SAFE_FLAG:<25}  safe mode: the recipe may name only lmforge's, its plugins', torch.optim's",
              f"  {'':<25}  and Lightning's classes (more with {trust.TRUSTED_ENV}; docs/reliability.md)",
              "  --debug                    show the traceback of an error (or LMFORGE_DEBUG=1)",
              "  -V, --version              print the version", "  -h, --help                 this help",
              "", "RECIPE is a bundled recipe's name (`lmforge recipes`) or a YAML file; several --config compose.",
              "A recipe is code, like a Python script: it can name any importable class or function (a LambdaLR's",
              "lr_lambda, a callback) and lmforge runs it. Run recipes you trust, or use --safe.",
              "", "exit codes: 0 done; 1 failed; 2 a user error (recipe, data file, checkpoint), said first and alone;",
              f"  {PREEMPTED} preempted: SIGTERM saved last.ckpt, requeue the job with the same command plus "
              "--ckpt_path last"]
    return "\n".join(lines)


def unknown_command_message(name: str) -> str:
    """``unknown command 'fti'. Did you mean 'fit'?`` and the commands there are."""
    extra = [ep.name for ep in metadata.entry_points(group="lmforge.commands")]
    commands = [*LIGHTNING_SUBCOMMANDS, *TOOLS, *extra]
    near = difflib.get_close_matches(name, commands, n=1, cutoff=0.6)
    return (f"unknown command {name!r}." + (f" Did you mean {near[0]!r}?" if near else "")
            + f" Commands: {', '.join(commands)} (`lmforge --help`).")


def apply_plugins_flag(argv: list[str]) -> list[str]:
    """Take ``--plugins NAMES`` out of ``argv`` and restrict the registry to the built-ins and NAMES.

    The registry loads before LightningCLI's parser is built (short names resolve only for imported
    classes), so the flag is handled here rather than by the parser.
    """
    out: list[str] = []
    names: str | None = None
    args = iter(argv)
    for arg in args:
        if arg == "--plugins":
            names = next(args, None)
            if names is None:
                raise ValueError("--plugins needs a value: comma-separated plugin names (\"\" for built-ins only).")
        elif arg.startswith("--plugins="):
            names = arg.split("=", 1)[1]
        else:
            out.append(arg)
    if names is not None:
        os.environ[AUTOLOAD_ENV] = "1"
        os.environ[ALLOW_ENV] = names
        registry(refresh=True)
    return out


def find_command(name: str) -> Any:
    """The function registered as command ``name`` in the ``lmforge.commands`` entry-point group, or None.

    Further ``lmforge <command>``s come from that group (``bias-eval``): the entry point's name is the
    command and its object a function ``(argv: list[str]) -> int``, so the core never imports their modules.
    """
    for entry_point in metadata.entry_points(group="lmforge.commands"):
        if entry_point.name == name:
            return entry_point.load()
    return None


def resolve_config_args(argv: list[str]) -> list[str]:
    """Replace ``--config NAME`` with the bundled recipe's path when NAME is not a file."""
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


