"""``lmforge fit``/``validate``/``test``/``predict --config``: LightningCLI over `LanguageModel` and a DataModule.

`run_training` builds the CLI (`run_cli`), runs the subcommand, and turns the errors a user can fix
(a recipe key, a plugin, a checkpoint) into a message without a traceback. `explain_error` puts what
the user must change in front of jsonargparse's own messages.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import pickle
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import torch.distributed as dist
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, LRSchedulerTypeTuple
from torch.optim import Optimizer

from lmforge.cli.commands import LIGHTNING_SUBCOMMANDS
from lmforge.core.checkpoint import unsafe_checkpoint_message
from lmforge.core.data import instruction_data, labeled  # noqa: F401  (so `class_path: LabeledTextData` resolves)
from lmforge.core.data.base import BaseTextData
from lmforge.core.hooks import RECIPE_KEYS
from lmforge.core.module import LanguageModel
from lmforge.core.plugin_checks import PluginCompatibilityError
from lmforge.core.registry import registry, unknown_plugin_message
from lmforge.runtime import run_paths
from lmforge.runtime.allocator import tune_malloc
from lmforge.runtime.checkpoint_io import AtomicCheckpointIO
from lmforge.runtime.observe.run_config import RunConfig
from lmforge.runtime.observe.wandb import finish_wandb, prepare_loggers
from lmforge.runtime.preemption import SaveOnPreemption


def run_training(argv: list[str], allow_outside_run_dir: bool = False) -> int:
    """Run a LightningCLI subcommand (``sys.argv`` holds it); the exit code."""
    tune_malloc()  # before the first step's buffers: see lmforge/runtime/allocator.py
    try:
        cli = run_cli(allow_outside_run_dir=allow_outside_run_dir)
    except PluginCompatibilityError as exc:  # a recipe error, found before any data is read: no traceback
        print(f"lmforge: error: {exc}", file=sys.stderr)
        return 2
    except pickle.UnpicklingError as exc:  # a --ckpt_path that torch.load(weights_only=True) refuses
        print(f"lmforge: error: --ckpt_path {unsafe_checkpoint_message(_ckpt_path(argv), exc)}", file=sys.stderr)
        return 2
    finish_wandb(getattr(cli, "trainer", None))  # one command, one W&B run, complete on disk when we return
    release_process_group()
    return 0


def _ckpt_path(argv: list[str]) -> str:
    for i, arg in enumerate(argv):
        if arg == "--ckpt_path" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--ckpt_path="):
            return arg.split("=", 1)[1]
    return "the checkpoint"


def release_process_group() -> None:
    """Destroy the default process group a distributed run created, before the interpreter exits.

    Lightning leaves it alive; left to interpreter teardown, a gloo group's threads can abort the process
    ("terminate called without an active exception") after a successful run, so the exit status lies.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # no rank tears the group down while another still talks to it
        dist.destroy_process_group()


def run_cli(args: list[str] | None = None, run: bool = True, allow_outside_run_dir: bool = False) -> Any:
    """Build (and by default run) the Lightning CLI; returns the CLI object.

    ``allow_outside_run_dir``: let the recipe's output paths lie outside the working directory
    (`lmforge.runtime.run_paths`; ``--allow_outside_run_dir`` on the command line).
    """
    plugins = registry()  # import every plugin class so short names resolve
    # Noise that users cannot act on: jsonargparse's note that tuple defaults (AdamW's betas) dump as lists.
    warnings.filterwarnings("ignore", message=r"\s*Dump of a value that does not round-trip")

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

        def _before_run(self) -> None:
            # Data settings the model cannot take are a recipe error, reported before any data is read.
            if hasattr(self.model, "check_data"):
                try:
                    self.model.check_data(self.datamodule)
                except (ValueError, FileNotFoundError) as exc:
                    self.parser.error(str(exc))
            # A run restored from a checkpoint must tokenize exactly as it was trained.
            ckpt_path = self.config_init[self.subcommand].get("ckpt_path")
            if ckpt_path and hasattr(self.datamodule, "checkpoint_path"):
                self.datamodule.checkpoint_path = str(ckpt_path)

        before_fit = before_validate = before_test = before_predict = _before_run

        def before_instantiate_classes(self) -> None:
            config = self.config[self.subcommand] if self.subcommand else self.config
            self._check_write_paths(config)
            if config.get("weights_only", False) is None:
                # Resuming, validating or testing from a checkpoint unpickles tensors and plain types only;
                # an lmforge checkpoint needs no more (tests/reliability/test_untrusted_files.py).
                config["weights_only"] = True
            # Logger names, W&B tags and the resumed W&B run id come from the recipe and the checkpoint.
            prepare_loggers(config, self.subcommand)

        def _check_write_paths(self, config: Any) -> None:
            if allow_outside_run_dir or run_paths.outside_allowed():
                return
            outside = run_paths.outside_writes(config.as_dict() if hasattr(config, "as_dict") else config)
            if outside:
                self.parser.error(run_paths.outside_writes_message(outside, Path.cwd()))

        def instantiate_classes(self) -> None:
            # The classes check their arguments when built; say which recipe key a refusal is about, without
            # a stack trace, as for a parse error.
            try:
                super().instantiate_classes()
            except PluginCompatibilityError:  # already names the plugin, its key and distribution; main() prints it
                raise
            except (ValueError, FileNotFoundError) as exc:
                config = self.config[self.subcommand] if self.subcommand else self.config
                self.parser.error(name_recipe_key(str(exc), config.as_dict()))

        def instantiate_trainer(self, **kwargs: Any) -> Trainer:
            trainer = super().instantiate_trainer(**kwargs)
            # Checkpoints are written atomically, and a full disk is explained (lmforge.runtime.checkpoint_io).
            if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not one the recipe chose
                trainer.strategy.checkpoint_io = AtomicCheckpointIO()
            return trainer

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
        save_config_callback=RunConfig,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"callbacks": [SaveOnPreemption()]},  # added to the recipe's callbacks
        auto_configure_optimizers=False,
        parser_kwargs={
            "default_config_files": [],
            "description": "Train language models with plugins. Other commands: recipes, plugins, export, "
                           "plot, predict MODEL --input FILE --output FILE.",
            **{cmd: {"default_config_files": []} for cmd in LIGHTNING_SUBCOMMANDS},
        },
        args=args,
        run=run,
    )


#: First words of a message that already names the recipe key it is about.
RECIPE_SECTIONS = ("model", "data", "trainer", "optimizer", "lr_scheduler", "seed_everything", "ckpt_path")


def name_recipe_key(message: str, config: dict[str, Any]) -> str:
    """Prefix an error raised while building a class (``"MaskedLM: mask_probability must ..."``) with the recipe
    key of that class and argument (``model.objective.init_args.mask_probability``), found in ``config``."""
    if re.match(rf"^({'|'.join(RECIPE_SECTIONS)})\b", message):
        return message
    found = re.match(r"^(\w+): (\w+)", message)
    if not found:
        return message
    class_name, argument = found.groups()
    for key, node in _class_nodes(config, ""):
        if node["class_path"].rsplit(".", 1)[-1] == class_name:
            init_args = node.get("init_args") or {}
            return f"{key}.init_args.{argument}: {message}" if argument in init_args else f"{key}: {message}"
    return message


def _class_nodes(node: Any, key: str) -> Any:
    """``(recipe key, node)`` of every ``{class_path: ..., init_args: ...}`` in a parsed recipe."""
    if isinstance(node, dict):
        if isinstance(node.get("class_path"), str):
            yield key, node
        for name, value in node.items():
            yield from _class_nodes(value, f"{key}.{name}" if key else name)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _class_nodes(value, f"{key}[{i}]")


def _as_dict(init: Any) -> dict[str, Any] | None:
    return init.as_dict() if hasattr(init, "as_dict") else init


#: Recipe keys under ``model`` that hold plugins, and their kind.
PLUGIN_KEYS = {key: kind for kind, key in RECIPE_KEYS.items()}


def explain_error(message: str, valid_keys: list[str], plugins: Any) -> str:
    """Put what the user must change in front of a jsonargparse error."""
    hints: list[str] = []
    group = re.search(r'Parser key "model\.(\w+)"', message)
    gone = _uninstalled_plugin(message, group.group(1) if group else None, plugins)
    if gone is not None:  # a saved config naming a plugin whose package is gone: jsonargparse's import error is noise
        return gone
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
    hints.extend(_wrong_value_hints(message))
    return "\n".join([*hints, message]) if hints else message


def _uninstalled_plugin(message: str, key: str | None, plugins: Any) -> str | None:
    """lmforge's unknown-plugin error for a plugin named by a dotted path that no longer imports (a run's saved
    config.yaml after its package was uninstalled), or None when ``message`` is not about one."""
    if key not in PLUGIN_KEYS:
        return None
    found = re.search(r"Problem with given class_path '([\w.]+)':\s*(No module named '[\w.]+'|module '[\w.]+' has "
                      r"no attribute '\w+')", message)
    if found is None:
        return None
    class_path, reason = found.groups()
    kind, name = PLUGIN_KEYS[key], class_path.rsplit(".", 1)[-1]
    if name in plugins.names(kind):  # the same name is installed from elsewhere: the config's path is stale
        info = plugins.get(kind, name)
        return (f"model.{key}: {class_path} cannot be imported ({reason}); the installed {kind.replace('_', ' ')} "
                f"{name!r} is {info.qualname} from {info.dist} {info.version}: name it `class_path: {name}`.")
    return f"model.{key}: {unknown_plugin_message(kind, name, plugins)} (The config names {class_path}: {reason}.)"


def _wrong_value_hints(message: str) -> list[str]:
    """``data.init_args.batch_size: Expected a <class 'int'>. Got value: sixteen`` from jsonargparse's nested
    report of a class's argument that has the wrong type."""
    outer = re.search(r'Parser key "([\w.]+)"', message)
    if outer is None:
        return []
    in_list = "Given value type: <class 'list'>" in message  # a list of plugins: name the class, not an index
    hints = []
    for class_path, inner, problem in re.findall(r"class_path '([\w.]+)':\s*Parser key \"(\w+)\":\s*(.+)", message):
        owner = f"{outer.group(1)}: {class_path.rsplit('.', 1)[-1]}" if in_list else outer.group(1)
        hints.append(f"{owner}.init_args.{inner}: {problem.strip()}")
    return hints


def _unknown_argument_hint(class_path: str, option: str) -> str:
    module_name, _, class_name = class_path.rpartition(".")
    try:
        params = [p for p in inspect.signature(getattr(importlib.import_module(module_name), class_name)).parameters
                  if p not in ("self", "args", "kwargs")]
    except (ImportError, AttributeError, ValueError):
        return f"{class_name} has no argument {option!r}."
    near = difflib.get_close_matches(option, params, n=1, cutoff=0.6)
    hint = f"{class_name} has no argument {option!r}" + (f"; did you mean {near[0]!r}?" if near else ".")
    return hint + f" Its arguments: {', '.join(params)}."
