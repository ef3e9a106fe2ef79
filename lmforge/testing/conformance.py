"""The conformance checks: what every lmforge plugin must do, checked on a tiny model.

`check_plugin` builds the plugin with its defaults (plus ``init_args``) and,
for each objective task it supports that has a fixture (`lmforge.testing.fixtures`;
a plugin that supports every objective: the language-model tasks, unless
``tasks`` names others):

1. its metadata is well formed, and it pickles (spawn-based strategies pickle
   the model before ``setup``);
2. its data-stage hooks, alone on fresh instances: ``process_text`` keeps
   every column, returns columns of equal length and string texts, and gives
   the same output for the same ``rng`` whatever the global random state;
   ``sample_weights`` gives one finite, non-negative weight per row;
3. one training step of a tiny model with it (Lightning ``Trainer``,
   ``max_steps=1``: data, setup, batch and loss stages as in a real run) gives
   a finite loss and finite gradients;
4. the validation batches are exactly those without the plugin (unless the
   plugin's ``splits`` include ``val``; augmenters never touch validation);
5. ``state_dict`` round-trip: the trained model's state loads, strictly, into
   a freshly built model with a fresh plugin, and the plugin's state matches;
6. the training step's hooks on the trained and on the restored model, under
   one seed: ``process_batch`` keeps the batch's keys and size, gives ids in
   the vocabulary and the same batch for the same generator whatever torch's
   global RNG; ``loss`` gives finite scalars, the same on both models, through
   which a finite gradient reaches some parameter.

A failure raises `ConformanceError`, naming the plugin, the task and the
check, with the underlying exception chained.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import math
import pickle
import random
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lmforge.core.hooks import KIND_BY_NAME, RECIPE_KEYS
from lmforge.core.module import LanguageModel, named_terms
from lmforge.core.plugins import Objective, Plugin, call_hook, metadata_problems, objective_task, overrides
from lmforge.core.registry import registry
from lmforge.testing.fixtures import FIXTURES, REQUIRED_ARGUMENTS, Fixture, Workdir, corpus_lines

#: The LanguageModel argument that holds each kind.
KIND_ARGUMENT = RECIPE_KEYS
SEED = 1234


class ConformanceError(AssertionError):
    """A plugin failed a conformance check; the message says which and why."""


@dataclass
class ConformanceReport:
    """What `check_plugin` checked: ``passed`` holds ``"<task>: <check>"`` for every check that ran."""

    plugin: str
    tasks: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)


class Kit:
    """Runs the conformance checks, keeping a corpus, caches and teachers in one working directory.

    Args:
        workdir: Where to keep them; a temporary directory (removed at exit) when None.
    """

    def __init__(self, workdir: str | Path | None = None) -> None:
        self.workdir = Workdir(workdir)

    def check(self, plugin: type[Plugin], init_args: dict[str, Any] | None = None,
              tasks: Sequence[str] | None = None) -> ConformanceReport:
        """Run every check on ``plugin``; see the module docstring and `check_plugin`."""
        name = plugin.__name__
        _require(isinstance(plugin, type) and issubclass(plugin, Plugin),
                 f"{plugin!r} is not a plugin class (a subclass of one of lmforge.core.plugins' kinds)")
        problems = metadata_problems(plugin)
        _require(not problems, f"{name}: malformed metadata: {'; '.join(problems)}")
        report = ConformanceReport(name, tasks=self.tasks_for(plugin, tasks))
        report.passed.append("metadata")
        for task in report.tasks:
            _Run(self.workdir, FIXTURES[task], plugin, dict(init_args or {}), report).run()
        return report

    def teacher(self, task: str = "causal_lm", checkpoint: bool = False) -> str:
        """A saved tiny model of the ``task`` fixture, trained with the fixture's tokenizer: what a distiller's
        ``teacher`` names.

        Args:
            task: The fixture's objective task.
            checkpoint: An lmforge checkpoint (``.ckpt``, as ``lmforge fit`` writes) instead of a Hugging Face
                model directory with its tokenizer (what the kit fills a required ``teacher`` with).
        """
        _require(task in FIXTURES, f"the kit has no fixture for {task!r} (it has {list(FIXTURES)})",
                 exc=MissingFixture)
        return self.workdir.teacher(FIXTURES[task], checkpoint)

    def tasks_for(self, plugin: type[Plugin], tasks: Sequence[str] | None = None) -> list[str]:
        """The fixture tasks ``plugin`` is checked on: ``tasks``, or every task it supports that has a fixture.

        A plugin that supports every objective (``supported_objectives = None``) is checked by default on the
        fixtures marked ``default`` (the language-model ones), and on any other fixture that ``tasks`` names.
        """
        if issubclass(plugin, Objective):
            supported: set[str] | None = {objective_task(plugin)}
        else:
            supported = None if plugin.supported_objectives is None else set(plugin.supported_objectives)
        if supported is None:
            claimed, default = list(FIXTURES), [t for t, f in FIXTURES.items() if f.default]
        else:
            claimed = [t for t, f in FIXTURES.items() if t in supported or f.objective in supported]
            default = claimed
        if tasks is not None:
            wrong = [t for t in tasks if t not in claimed]
            _require(not wrong, f"{plugin.__name__}: cannot check on {wrong}: the plugin supports "
                                f"{sorted(supported or ['every objective'])} and the kit has fixtures for "
                                f"{list(FIXTURES)}")
            return list(tasks)
        _require(bool(default), f"{plugin.__name__} supports {sorted(supported or [])}, and the kit has no "
                                f"fixture for any of them (it has {list(FIXTURES)}); add one with "
                                "lmforge.testing.register_fixture", exc=MissingFixture)
        return default


class MissingFixture(ConformanceError):
    """The plugin supports only objective tasks the kit has no tiny model and data for."""


_DEFAULT_KIT: Kit | None = None


def default_kit() -> Kit:
    global _DEFAULT_KIT
    if _DEFAULT_KIT is None:
        _DEFAULT_KIT = Kit()
    return _DEFAULT_KIT


def check_plugin(plugin: type[Plugin], init_args: dict[str, Any] | None = None,
                 tasks: Sequence[str] | None = None, kit: Kit | None = None) -> ConformanceReport:
    """Check that ``plugin`` keeps lmforge's plugin contract; raise `ConformanceError` if it does not.

    Args:
        plugin: The plugin class (any kind, objectives included).
        init_args: Arguments for its ``__init__`` besides its defaults. A required argument named
            ``teacher`` is filled with a saved tiny model; other required arguments must be given.
        tasks: Objective tasks to check on (``causal_lm``, ``masked_lm``, ``sequence_classification``,
            ``token_classification``); default: every task the plugin supports (``supported_objectives``)
            that the kit has a fixture for, the language-model ones for a plugin that supports every objective.
        kit: The `Kit` (working directory) to use; default: one per process.

    Returns:
        What was checked, per task.
    """
    return (kit or default_kit()).check(plugin, init_args, tasks)


def _require(condition: bool, message: str, exc: type[ConformanceError] = ConformanceError) -> None:
    if not condition:
        raise exc(message)


@contextlib.contextmanager
def _checking(what: str) -> Iterator[None]:
    """Turn any exception inside into a `ConformanceError` that says which check failed."""
    try:
        yield
    except ConformanceError:
        raise
    except Exception as exc:
        raise ConformanceError(f"{what}: {type(exc).__name__}: {exc}") from exc


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Lightning's start-up notes and hints about workers are noise in a plugin's test output."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


class _Run:
    """The checks of one plugin on one fixture."""

    def __init__(self, workdir: Workdir, fixture: Fixture, cls: type[Plugin], init_args: dict[str, Any],
                 report: ConformanceReport) -> None:
        self.workdir, self.fixture, self.cls, self.report = workdir, fixture, cls, report
        self.where = f"{cls.__name__} on {fixture.task}"
        self.init_args = self._fill_required(init_args)

    def passed(self, check: str) -> None:
        self.report.passed.append(f"{self.fixture.task}: {check}")

    def _fill_required(self, init_args: dict[str, Any]) -> dict[str, Any]:
        args = dict(init_args)
        for name, param in inspect.signature(self.cls.__init__).parameters.items():
            if name == "self" or name in args or param.default is not inspect.Parameter.empty:
                continue
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            _require(name in REQUIRED_ARGUMENTS,
                     f"{self.where}: {self.cls.__name__}.__init__ requires {name!r}, which the kit cannot fill "
                     f"(it fills {sorted(REQUIRED_ARGUMENTS)}); pass init_args={{{name!r}: ...}}")
            args[name] = REQUIRED_ARGUMENTS[name](self.workdir, self.fixture)
        return args

    def build(self) -> Plugin:
        _seed(SEED)
        with _checking(f"{self.where}: building {self.cls.__name__}(**{self.init_args!r})"):
            return self.cls(**self.init_args)

    def model(self, plugin: Plugin) -> Any:
        key = KIND_ARGUMENT[plugin.kind]
        if key == "objective":
            return LanguageModel(self.fixture.backbone, plugin)
        objective = registry().get("objective", self.fixture.objective).cls()
        value = [plugin] if KIND_BY_NAME[plugin.kind].many else plugin
        return LanguageModel(self.fixture.backbone, objective, **{key: value})

    # -- the checks, in order --------------------------------------------------------------------

    def run(self) -> None:
        with _quiet():
            plugin = self.build()
            self.check_pickle(plugin)
            self.check_text_hooks(plugin)  # before training, on fresh instances: cheap, and clearer alone
            with _checking(f"{self.where}: the host refused the plugin with the {self.fixture.objective} "
                           "objective"):
                model = self.model(plugin)
            data = self.workdir.data(self.fixture)
            self.check_training_step(model, data)
            self.check_validation_untouched(plugin, data)
            restored = self.restore(model, data)
            self.check_step(model, restored, data)

    def check_pickle(self, plugin: Plugin) -> None:
        with _checking(f"{self.where}: pickling the plugin (spawn-based strategies pickle the model) failed"):
            copy = pickle.loads(pickle.dumps(plugin))
        _require(type(copy) is type(plugin), f"{self.where}: unpickling gave a {type(copy).__name__}")
        _assert_same_state(plugin.state_dict(), copy.state_dict(), f"{self.where}: pickling")
        self.passed("pickle")

    def check_training_step(self, model: Any, data: Any) -> None:
        from lightning.pytorch import Callback, Trainer

        class StepCheck(Callback):
            def __init__(self) -> None:
                self.loss: float | None = None
                self.grads: list[Tensor] = []

            def on_after_backward(self, trainer: Trainer, pl_module: Any) -> None:
                self.grads = [p.grad for p in pl_module.parameters() if p.grad is not None]

            def on_train_batch_end(self, trainer: Trainer, pl_module: Any, outputs: Any, batch: Any,
                                   batch_idx: int) -> None:
                self.loss = float(outputs["loss"])

        check = StepCheck()
        trainer = Trainer(max_steps=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                          num_sanity_val_steps=0, callbacks=[check], default_root_dir=str(self.workdir.path))
        _seed(SEED)
        try:
            trainer.fit(model, datamodule=data)
        except Exception as exc:
            self.diagnose(model, data, exc)
            raise ConformanceError(f"{self.where}: one training step of a tiny {self.fixture.task} model failed: "
                                   f"{type(exc).__name__}: {exc}") from exc
        _require(check.loss is not None and math.isfinite(check.loss),
                 f"{self.where}: the training loss of one step is {check.loss}, not a finite number")
        _require(bool(check.grads), f"{self.where}: no parameter received a gradient in a training step")
        _require(all(bool(torch.isfinite(g).all()) for g in check.grads),
                 f"{self.where}: a training step gave non-finite gradients")
        self.passed("training step")

    def diagnose(self, model: Any, data: Any, failure: Exception) -> None:
        """After a failed training step, rerun the plugin's hooks alone: a broken hook (ids outside the
        vocabulary, say) is a clearer message than the error it caused further down."""
        if model.backbone is None or not getattr(data, "datasets", None):
            return
        try:
            with _without_logging(model):
                self.step(model, next(iter(data.train_dataloader())), SEED)
        except ConformanceError as diagnosis:
            raise diagnosis from failure
        except Exception:  # nothing clearer to say than the failure itself
            return

    def check_validation_untouched(self, plugin: Plugin, data: Any) -> None:
        if not overrides(plugin, "process_text") or "val" in plugin.splits:
            return
        baseline = self.workdir.baseline_val(self.fixture)
        batches = list(data.val_dataloader())
        same = len(batches) == len(baseline) and all(
            a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a) for a, b in zip(batches, baseline))
        _require(same, f"{self.where}: process_text changed the validation split, but the plugin only declares "
                       f"splits={plugin.splits!r} (augmenters never touch validation)")
        self.passed("validation split untouched")

    def check_text_hooks(self, plugin: Plugin) -> None:
        """Data-stage hooks on fresh instances (``plugin`` only says which hooks there are)."""
        texts = corpus_lines(16, seed=3)
        examples = {"text": texts, "id": list(range(len(texts)))}
        if overrides(plugin, "process_text"):
            outputs = []
            # Two instances, the same rng seed, different global seeds: the same output, unless the hook
            # draws from global state (which differs between ranks and workers).
            for global_seed, instance in ((SEED, self.build()), (SEED + 1, self.build())):
                _seed(global_seed)
                with _checking(f"{self.where}: process_text raised"):
                    out = call_hook(instance.process_text, {k: list(v) for k, v in examples.items()},
                                    random.Random(SEED), split="train")
                _require(isinstance(out, dict), f"{self.where}: process_text must return a dict of columns, "
                                                f"got {type(out).__name__}")
                lost = sorted(set(examples) - set(out))
                _require(not lost, f"{self.where}: process_text dropped the column(s) {lost}; keep every column "
                                   "(filter rows, not columns)")
                lengths = {k: len(v) for k, v in out.items()}
                _require(len(set(lengths.values())) == 1, f"{self.where}: process_text returned columns of "
                                                          f"unequal length: {lengths}")
                _require(all(isinstance(t, str) for t in out["text"]),
                         f"{self.where}: process_text returned a 'text' that is not a string")
                outputs.append(out)
            _require(outputs[0] == outputs[1], f"{self.where}: process_text is not deterministic: two runs with "
                                               "the same rng differ; draw randomness only from the rng it is given")
            if overrides(plugin, "data_report"):
                with _checking(f"{self.where}: data_report raised"):
                    report = instance.data_report()
                _require(report is None or (isinstance(report, dict) and all(
                    isinstance(k, str) and isinstance(v, (int, float)) and math.isfinite(v) for k, v in report.items())),
                    f"{self.where}: data_report must return None or finite numbers by name, got {report!r}")
            self.passed("process_text")
        if overrides(plugin, "sample_weights"):
            import datasets

            with _checking(f"{self.where}: sample_weights raised"):
                weights = self.build().sample_weights(datasets.Dataset.from_dict(examples))
            if weights is not None:
                w = torch.as_tensor(list(weights), dtype=torch.double)
                _require(w.shape == (len(texts),) and bool(torch.isfinite(w).all()) and bool((w >= 0).all()),
                         f"{self.where}: sample_weights must give {len(texts)} finite, non-negative weights, "
                         f"got {w.tolist()}")
            self.passed("sample_weights")

    def restore(self, model: Any, data: Any) -> Any:
        """A freshly built model (fresh plugin) with the trained model's state loaded strictly."""
        fresh = self.model(self.build())
        fresh.tokenizer = data.tokenizer
        fresh.objective.bind_data(data)  # what Trainer.fit gives configure_model: a classifier's labels
        _seed(SEED)
        with _checking(f"{self.where}: setup of a fresh plugin raised"):
            fresh.configure_model()
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        buffer.seek(0)
        with _checking(f"{self.where}: state_dict round-trip: the trained model's state does not load into a "
                       "fresh one (are all the plugin's parameters created in __init__ or setup?)"):
            fresh.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
        _assert_same_state(_plugin_of(model).state_dict(), _plugin_of(fresh).state_dict(),
                           f"{self.where}: state_dict round-trip")
        self.passed("state_dict round-trip")
        return fresh

    def check_step(self, model: Any, restored: Any, data: Any) -> None:
        batch = next(iter(data.train_dataloader()))
        with _without_logging(model), _without_logging(restored):
            first = self.step(model, batch, SEED)
            second = self.step(restored, batch, SEED + 1)
        plugin = _plugin_of(model)
        if overrides(plugin, "process_batch"):
            _require(_equal(first["batch"], second["batch"]),
                     f"{self.where}: process_batch is not deterministic: the same generator seed gave different "
                     "batches; draw randomness only from the generator it is given, not from torch's global RNG")
            self.passed("process_batch")
        terms, again = first["terms"], second["terms"]
        if terms:
            _require(terms.keys() == again.keys() and all(torch.equal(terms[k], again[k]) for k in terms),
                     f"{self.where}: the loss is not deterministic under a seed: {_values(terms)} then "
                     f"{_values(again)} (after a state_dict round-trip)")
            self.check_gradient(model, terms)
            self.passed("loss")

    def step(self, model: Any, batch: dict[str, Tensor], global_seed: int) -> dict[str, Any]:
        """The training step's plugin work, as `LanguageModel.training_step` does it.

        The step generator is seeded with `SEED`; the global RNG with ``global_seed`` for the batch stage (whose
        hooks must not use it) and with `SEED` from the forward pass on (dropout draws from it).
        """
        model.train()
        plugin = _plugin_of(model)
        _seed(global_seed)
        generator = torch.Generator().manual_seed(SEED)
        with _checking(f"{self.where}: the objective's prepare raised"):
            batch = model.objective.prepare(dict(batch), generator)
        if overrides(plugin, "process_batch"):
            with _checking(f"{self.where}: process_batch raised"):
                out = plugin.process_batch(batch, generator)
            self.check_batch(batch, out, model)
            batch = out
        _seed(SEED)
        with _checking(f"{self.where}: the forward pass raised"):
            outputs = model(batch)
            result = model.objective.compute(outputs, batch)
        terms: dict[str, Tensor] = {}
        if plugin is model.objective:
            terms = {plugin.name: result.loss}
        elif overrides(plugin, "loss"):
            ctx = model.step_context(batch, outputs, result)
            with _checking(f"{self.where}: loss raised"):
                terms, _ = named_terms(plugin, plugin.loss(ctx))
        for key, value in terms.items():
            _require(bool(torch.isfinite(value)), f"{self.where}: loss/{key} = {float(value.detach())} is not finite")
        return {"batch": batch, "terms": terms}

    def check_batch(self, before: dict[str, Tensor], after: Any, model: Any) -> None:
        _require(isinstance(after, dict) and "input_ids" in after,
                 f"{self.where}: process_batch must return the batch dict (with input_ids), got {type(after).__name__}")
        lost = sorted(set(before) - set(after))
        _require(not lost, f"{self.where}: process_batch dropped {lost} from the batch")
        ids = after["input_ids"]
        _require(ids.shape[0] == before["input_ids"].shape[0],
                 f"{self.where}: process_batch changed the batch size from {before['input_ids'].shape[0]} "
                 f"to {ids.shape[0]}")
        vocab = model.backbone.get_input_embeddings().num_embeddings
        _require(bool(((ids >= 0) & (ids < vocab)).all()),
                 f"{self.where}: process_batch produced input ids outside the vocabulary [0, {vocab})")
        for key, value in after.items():
            if isinstance(value, Tensor) and value.is_floating_point():
                _require(bool(torch.isfinite(value).all()), f"{self.where}: process_batch gave non-finite {key}")

    def check_gradient(self, model: Any, terms: dict[str, Tensor]) -> None:
        total = torch.stack(list(terms.values())).sum()
        params = [p for p in model.parameters() if p.requires_grad]
        _require(total.requires_grad, f"{self.where}: the loss term does not depend on any parameter (no "
                                      "gradient flows through it); return a tensor computed from the model's "
                                      "outputs or parameters, not a detached value")
        grads = torch.autograd.grad(total, params, allow_unused=True)
        flowing = [g for g in grads if g is not None]
        _require(bool(flowing), f"{self.where}: no gradient flows from the loss term to any parameter")
        _require(all(bool(torch.isfinite(g).all()) for g in flowing),
                 f"{self.where}: the loss term's gradient is not finite")
        self.passed("gradient flow")


@contextlib.contextmanager
def _without_logging(model: Any) -> Iterator[None]:
    """``model.log``/``log_dict`` as no-ops: hooks may log (``ctx.model.log``), and the kit calls them outside
    Lightning's loop, where logging is refused."""
    model.log = model.log_dict = lambda *args, **kwargs: None
    try:
        yield
    finally:
        del model.log, model.log_dict


def _plugin_of(model: Any) -> Plugin:
    """The plugin under test inside ``model`` (the only one besides the objective, or the objective)."""
    plugins = model.plugins()
    return plugins[0] if plugins else model.objective


def _assert_same_state(a: dict[str, Any], b: dict[str, Any], where: str) -> None:
    _require(a.keys() == b.keys(), f"{where}: the state_dict keys differ: {sorted(a)} vs {sorted(b)}")
    for key in a:
        same = torch.equal(a[key], b[key]) if isinstance(a[key], Tensor) else a[key] == b[key]
        _require(bool(same), f"{where}: state_dict[{key!r}] differs after the round-trip")


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, Tensor):
        return isinstance(b, Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
    return a == b


def _values(terms: dict[str, Tensor]) -> dict[str, float]:
    return {k: float(v.detach()) for k, v in terms.items()}
