"""``lmforge fit``/``validate``/``test``/``predict --config``: LightningCLI over `LanguageModel` and a DataModule.

`run_training` builds the CLI (`run_cli`), runs the subcommand, and turns the errors a user can fix
(a recipe key, a plugin, a data file, a checkpoint) into ``lmforge: error: <message>`` and exit code 2,
first and alone: no usage text, no traceback (`lmforge.cli.errors`; ``LMFORGE_DEBUG=1`` shows it). `explain_error`
puts what the user must change, with a "did you mean" where a name is near, in front of jsonargparse's own
messages, and abbreviated options are refused (``--trainer.max_step`` is not ``max_steps``).

Where runs go (`lmforge.runtime.run_dirs`): ``fit --ckpt_path last`` continues the newest run of the recipe in its
own directory; ``validate`` and ``test`` log beside the checkpoint's run, never as a new ``version_N``. A run
stopped by SIGTERM saves ``last.ckpt`` and exits with `PREEMPTED` (143), the code schedulers requeue. ``fit``
ends with a summary (`lmforge.runtime.observe.summary`).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import os
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
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.optim import Optimizer

from lmforge.cli import collector, recipe_limits, run_guards, trust
from lmforge.cli.commands import LIGHTNING_SUBCOMMANDS
from lmforge.cli.errors import PREEMPTED, USER_ERROR, classify, debug_enabled
from lmforge.core.checkpoint import unsafe_checkpoint_message
from lmforge.core.data import instruction_data, labeled  # noqa: F401  (so `class_path: LabeledTextData` resolves)
from lmforge.core.data.base import BaseTextData
from lmforge.core.hooks import RECIPE_KEYS
from lmforge.core.module import LanguageModel
from lmforge.core.plugin_checks import PluginCompatibilityError
from lmforge.core.registry import registry, unknown_plugin_message
from lmforge.runtime import run_dirs, run_paths, run_versions
from lmforge.runtime.allocator import tune_malloc
from lmforge.runtime.checkpoint_io import AtomicCheckpointIO
from lmforge.runtime.console import progress_bar, quiet_resume_noise, quiet_third_party_noise
from lmforge.runtime.observe.run_config import RunConfig
from lmforge.runtime.observe.summary import RunSummary, print_summary
from lmforge.runtime.observe.wandb import finish_wandb, prepare_loggers
from lmforge.runtime.preemption import SaveOnPreemption


def run_training(argv: list[str], allow_outside_run_dir: bool = False) -> int:
    """Run a LightningCLI subcommand (``sys.argv`` holds it); the exit code."""
    tune_malloc()  # before the first step's buffers: see lmforge/runtime/allocator.py
    ignore_file_size_signal()
    subcommand = argv[0] if argv and argv[0] in LIGHTNING_SUBCOMMANDS else None
    quiet_third_party_noise(subcommand)
    try:
        try:
            cli = run_cli(allow_outside_run_dir=allow_outside_run_dir)
        except BaseException:
            run_versions.release_unused()  # a version claimed for a run that never wrote to it is given back
            raise
        finally:
            run_versions.forget_claims()
    except SIGTERMException:  # preempted: SaveOnPreemption saved last.ckpt; tell the scheduler to requeue
        release_process_group(wait_for_others=False)
        return PREEMPTED
    except pickle.UnpicklingError as exc:  # a --ckpt_path that torch.load(weights_only=True) refuses
        if debug_enabled():
            raise
        say(f"error: --ckpt_path {unsafe_checkpoint_message(_ckpt_path(argv), exc)}")
        return USER_ERROR
    except Exception as exc:
        code = classify(exc)
        if code is None or debug_enabled():  # a bug: its traceback is what a report needs
            raise
        say(f"error: {exc}")
        release_process_group(wait_for_others=False)
        return code
    trainer = getattr(cli, "trainer", None)
    finish_wandb(trainer)  # one command, one W&B run, complete on disk when we return
    release_process_group()
    if cli.subcommand == "fit":
        print_summary(trainer, sys.stderr)
    return 0


def ignore_file_size_signal() -> None:
    """Let a write beyond the file-size limit (``ulimit -f``) fail with EFBIG, which the checkpoint writer explains,
    instead of SIGXFSZ killing the process without a word."""
    import signal

    if hasattr(signal, "SIGXFSZ"):
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        except ValueError:  # not the main thread
            pass


def say(message: str) -> None:
    """``lmforge: <message>`` on stderr, from the first process of a distributed run only."""
    if all(os.environ.get(key, "0") == "0" for key in ("RANK", "LOCAL_RANK", "NODE_RANK")):
        print(f"lmforge: {message}", file=sys.stderr, flush=True)


def _ckpt_path(argv: list[str]) -> str:
    for i, arg in enumerate(argv):
        if arg == "--ckpt_path" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--ckpt_path="):
            return arg.split("=", 1)[1]
    return "the checkpoint"


def release_process_group(wait_for_others: bool = True) -> None:
    """Destroy the default process group a distributed run created, before the interpreter exits.

    Lightning leaves it alive; left to interpreter teardown, a gloo group's threads can abort the process
    ("terminate called without an active exception") after a successful run, so the exit status lies.
    ``wait_for_others``: first a barrier, so that no rank tears the group down while another still talks to
    it (not after an error or a SIGTERM, where another rank may never arrive).
    """
    if dist.is_available() and dist.is_initialized():
        if wait_for_others:
            dist.barrier()
        dist.destroy_process_group()


def run_cli(args: list[str] | None = None, run: bool = True, allow_outside_run_dir: bool = False) -> Any:
    """Build (and by default run) the Lightning CLI; returns the CLI object.

    ``allow_outside_run_dir``: let the recipe's output paths lie outside the working directory
    (`lmforge.runtime.run_paths`; ``--allow_outside_run_dir`` on the command line).
    """
    plugins = registry()  # import every plugin class so short names resolve
    recipe_limits.install()  # every YAML the parser loads is bounded before it is built (alias bombs)
    # Noise that users cannot act on: jsonargparse's note that tuple defaults (AdamW's betas) dump as lists.
    warnings.filterwarnings("ignore", message=r"\s*Dump of a value that does not round-trip")

    class RecipeParser(LightningArgumentParser):
        """Adds what a user needs to fix a recipe to jsonargparse's error messages."""

        cli: LightningCLI | None = None

        def error(self, message: str, *args: Any, **kwargs: Any) -> Any:
            explained = explain_error(message, self.valid_keys(), plugins)
            if not self.exit_on_error:  # jsonargparse catches it (trying the types of a union, ...)
                return super().error(explained, *args, **kwargs)
            if debug_enabled():  # the traceback was asked for
                raise argparse.ArgumentError(None, explained)
            # The message first and alone: no usage text before it (`lmforge COMMAND --help` has the keys).
            say(f"error: {explained}")
            self.exit(USER_ERROR)

        def valid_keys(self) -> list[str]:
            parsers = getattr(self.cli, "_subcommand_parsers", None) or {}
            found = [self] if not parsers else list(parsers.values())
            return sorted({key for parser in found for key in recipe_keys(parser)})

    argv = sys.argv[1:] if args is None else args
    invoked = argv[0] if argv and argv[0] in LIGHTNING_SUBCOMMANDS else None

    class LMForgeCLI(LightningCLI):
        @staticmethod
        def subcommands() -> dict[str, set[str]]:
            # The parser of the subcommand run, not all four: each one resolves the signatures of the model, the
            # data classes, the trainer and every plugin (about 40 ms apiece) before the first step.
            every = LightningCLI.subcommands()
            return {invoked: every[invoked]} if invoked in every else every

        def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
            parser = super().init_parser(**kwargs)
            parser.cli = self
            return parser

        def _before_run(self) -> None:
            collector.resume()  # start-up is over: the recipe's classes are built (lmforge/cli/collector.py)
            if self.subcommand == "fit":  # the run's metrics.csv continues (a resumed run) instead of starting over
                run_dirs.continue_csv_logs(self.trainer.loggers, self._resumed_step)
            # Data settings the model cannot take are a recipe error, reported before any data is read.
            if hasattr(self.model, "check_data"):
                try:
                    self.model.check_data(self.datamodule)
                except (ValueError, FileNotFoundError) as exc:
                    if debug_enabled():
                        raise
                    self.parser.error(str(exc))
            run_guards.warn_untrained(self.subcommand, self.config[self.subcommand])
            # A run restored from a checkpoint must tokenize exactly as it was trained.
            ckpt_path = self.config_init[self.subcommand].get("ckpt_path")
            if ckpt_path and hasattr(self.datamodule, "checkpoint_path"):
                self.datamodule.checkpoint_path = str(ckpt_path)

        before_fit = before_validate = before_test = before_predict = _before_run

        _resumed_step: int | None = None

        def _parse_ckpt_path(self) -> None:
            # LightningCLI's, through lmforge's loader: the digest is checked, the model must be the recipe's kind
            # (run_guards), and the tensors are only mapped (Lightning reads the whole file for its hparams).
            subcommand = self.config.get("subcommand")
            ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
            if not ckpt_path or not Path(ckpt_path).is_file():
                return
            checkpoint = run_guards.checkpoint_for_recipe(ckpt_path, self.config[subcommand])
            hparams = dict(checkpoint.get("hyper_parameters") or {})
            hparams.pop("_instantiator", None)
            if not hparams:
                return
            if "_class_path" in hparams:
                hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)

        def before_instantiate_classes(self) -> None:
            config = self.config[self.subcommand] if self.subcommand else self.config
            if config.get("weights_only", False) is None:
                # Resuming, validating or testing from a checkpoint unpickles tensors and plain types only;
                # an lmforge checkpoint needs no more (tests/reliability/test_untrusted_files.py).
                config["weights_only"] = True
            self._check_ckpt_path(config)
            # Logger names, W&B tags and the resumed W&B run id come from the recipe and the checkpoint.
            prepare_loggers(config, self.subcommand)
            if trust.safe_mode():
                try:
                    trust.check_parsed(config.as_dict() if hasattr(config, "as_dict") else config)
                except trust.UntrustedRecipe as exc:
                    self.parser.error(str(exc))
            placed = False  # the loggers were pointed at an existing run's directory: resumed, or evaluating it
            if self.subcommand == "fit" and config.get("ckpt_path") == "last":
                placed = self._resume_newest_run(config)
            elif self.subcommand in ("validate", "test"):
                self._place_evaluation(config)
                placed = True
            self._check_write_paths(config)  # after the names are filled: they are joined onto save_dir
            if not placed:
                # Each logger's version directory is claimed now (mkdir, atomically), so concurrent runs never
                # share one.
                run_versions.claim_versions(config, self.subcommand)

        def _check_ckpt_path(self, config: Any) -> None:
            ckpt_path = config.get("ckpt_path")
            if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry") and not Path(ckpt_path).exists():
                self.parser.error(f"--ckpt_path {ckpt_path}: no such checkpoint. Give a checkpoint file (e.g. "
                                  "runs/<name>/version_N/checkpoints/last.ckpt), or `--ckpt_path last` with fit.")

        def _resume_newest_run(self, config: Any) -> bool:
            """Point ``--ckpt_path last`` and the loggers at the newest run with a last checkpoint; whether one was
            found (else a new run starts)."""
            roots = run_dirs.searched_roots(config)
            if not roots:  # no logger writes run directories: Lightning looks in ModelCheckpoint's dirpath
                return False
            resumed = run_dirs.resume_newest_run(config)
            if resumed is None:
                config["ckpt_path"] = None
                where = " or ".join(f"{root}/version_*/checkpoints/last.ckpt" for root in roots)
                say(f"--ckpt_path last: no earlier run has a last checkpoint ({where}); starting a new run.")
                return False
            # The checkpoint is read again, with the W&B run id, now that ckpt_path names it.
            prepare_loggers(config, self.subcommand)
            quiet_resume_noise()
            self._resumed_step = resumed.step
            at = f" at step {resumed.step}" if resumed.step is not None else ""
            say(f"resuming {resumed.checkpoint}{at}; the run continues in {resumed.run_dir}")
            return True

        def _place_evaluation(self, config: Any) -> None:
            ckpt_path = config.get("ckpt_path")
            where = run_dirs.place_evaluation_logs(config, self.subcommand)
            if where is not None:
                say(f"{self.subcommand}: scoring {ckpt_path}; metrics go to {where}")
            if not ckpt_path:
                backbone = (config.get("model") or {}).get("backbone") or {}
                start = backbone.get("pretrained") or backbone.get("checkpoint")
                what = f"the model of {start} with any new head untrained" if start else "an untrained model"
                say(f"warning: {self.subcommand} without --ckpt_path scores {what}. Give --ckpt_path "
                    "runs/<name>/version_N/checkpoints/<file>.ckpt to score a trained one.")
            data = (config.get("data") or {}).get("init_args") or {}
            if self.subcommand == "test" and not data.get("test"):
                say("test: data.init_args.test is not set, so this scores the validation split (data.init_args.val "
                    "or the held-out data.val_fraction) and logs it as test/*. Give data.init_args.test FILES to "
                    "score a test split.")

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
                if debug_enabled():
                    raise
                config = self.config[self.subcommand] if self.subcommand else self.config
                self.parser.error(name_recipe_key(str(exc), config.as_dict()))

        def instantiate_trainer(self, **kwargs: Any) -> Trainer:
            # A missing data file is a recipe error, named before the trainer starts anything (when a command runs:
            # `run_cli(run=False)` only builds the classes).
            if self.subcommand is not None and hasattr(self.datamodule, "check_files"):
                self.datamodule.check_files()
            recipe_callbacks = [id(c) for c in self._recipe_callbacks()]
            trainer = super().instantiate_trainer(**kwargs)
            outside_ok = allow_outside_run_dir or run_paths.outside_allowed()
            if not outside_ok:  # every path the built loggers and callbacks will write, joined and resolved
                outside = run_paths.trainer_outside_writes(trainer, Path.cwd())
                if outside:
                    raise ValueError(run_paths.outside_writes_message(outside, Path.cwd()))
            # Checkpoints are written atomically with a digest, and a full disk is explained (runtime.checkpoint_io).
            if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not one the recipe chose
                trainer.strategy.checkpoint_io = AtomicCheckpointIO(write_root=None if outside_ok else Path.cwd())
            self._use_lmforge_progress_bar(trainer, recipe_callbacks)
            if self.subcommand in ("validate", "test"):
                run_dirs.continue_csv_logs(trainer.loggers)  # each evaluation adds its rows
            return trainer

        def _recipe_callbacks(self) -> list[Any]:
            config = self.config_init[self.subcommand] if self.subcommand else self.config_init
            callbacks = (config.get("trainer") or {}).get("callbacks") or []
            return callbacks if isinstance(callbacks, list) else [callbacks]

        @staticmethod
        def _use_lmforge_progress_bar(trainer: Trainer, recipe_callbacks: list[int]) -> None:
            """Replace the progress bar Lightning added itself (the recipe named none) with lmforge's."""
            bar = trainer.progress_bar_callback
            if bar is None or id(bar) in recipe_callbacks:
                return
            # It reads the run's values on the host at logging steps only (lmforge.runtime.console).
            trainer.callbacks[trainer.callbacks.index(bar)] = progress_bar(refresh_rate=max(1, trainer.log_every_n_steps))

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
        trainer_defaults={"callbacks": [SaveOnPreemption(), RunSummary()]},  # added to the recipe's callbacks
        auto_configure_optimizers=False,
        parser_kwargs={
            "default_config_files": [],
            "allow_abbrev": False,  # `--trainer.max_step` must not pass for `--trainer.max_steps`
            "description": "Train language models with plugins. Other commands: recipes, plugins, export, "
                           "plot, predict MODEL --input FILE --output FILE. " + RECIPE_IS_CODE,
            **{cmd: {"default_config_files": [], "allow_abbrev": False,
                     "description": f"lmforge {cmd}. {RECIPE_IS_CODE}"} for cmd in LMForgeCLI.subcommands()},
        },
        args=args,
        run=run,
    )


#: Said by ``--help``: what running a recipe means.
RECIPE_IS_CODE = ("A recipe is code, like a Python script: it can name any importable class or function (a "
                  "LambdaLR's lr_lambda, a callback), and lmforge runs it. Run recipes you trust, or add --safe to "
                  "accept only lmforge's, its plugins', torch.optim's and Lightning's classes (docs/reliability.md).")


def recipe_keys(parser: Any) -> list[str]:
    """Every dotted key ``parser`` accepts (``model.backbone.architecture``, ``trainer.max_steps``, ...)."""
    return [key for key in parser.get_defaults().keys() if not key.startswith("__")]


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
        hints.append(_unknown_key_hint(key.group(1), valid_keys))
    unrecognized = re.search(r"unrecognized arguments: (.+)", message)
    if unrecognized:
        for option in re.findall(r"(?:^|\s)--([\w.]+)", unrecognized.group(1)):
            hints.append(_unknown_key_hint(option, valid_keys))
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


def _unknown_key_hint(key: str, valid_keys: list[str]) -> str:
    """``Unknown recipe key 'trainer.max_step'. Did you mean 'trainer.max_steps'?``: the nearest keys, among those
    of the same section first (``trainer.``), where a misspelt key's intended one almost always is."""
    section = key.split(".", 1)[0] + "."
    same_section = [k for k in valid_keys if k.startswith(section)]
    near = difflib.get_close_matches(key, same_section, n=1, cutoff=0.6) or difflib.get_close_matches(
        key, valid_keys, n=1, cutoff=0.6)
    return f"Unknown recipe key {key!r}." + (f" Did you mean {near[0]!r}?" if near else "")


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
