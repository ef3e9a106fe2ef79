"""The plugin kinds and the hooks the core calls on them.

Every plugin is an ``nn.Module`` owned by the `LanguageModel`, so its
parameters, buffers and ``get_extra_state`` are trained, checkpointed and
moved to the device with the model. A plugin implements only the hooks it
needs; the core calls a hook only on plugins that override it. The kinds and
hooks are declared once, in `lmforge.core.hooks`; this table is made from it:

{HOOK_TABLE}

A hook's full contract is its docstring below. Data-stage hooks see rows, not
the model; ``setup`` sees the host view (`Host`: tokenizer, backbone,
objective, device); ``process_batch`` sees the prepared batch; ``loss`` sees
a `StepContext`.

Run order: at every stage, the host calls the plugins in one order, computed
once when the model is built: recipe order (regularizers, augmenters, bias
mitigators, the distiller, data filters), with a plugin moved only as far as
its ``runs_after``/``runs_before`` demand. Those declarations are merged over a
plugin's classes, and the kinds declare their own: data filters run before bias
mitigators and augmenters, and augmenters after bias mitigators, so that data
is redacted, filtered and rewritten before it is augmented.

An exception from any hook stops the run with an error that names the plugin,
its recipe key and its distribution (`lmforge.core.plugin_checks`), keeping
the exception's type.

Metadata: class attributes a plugin declares and the host checks in
``LanguageModel.__init__``, before any data is read (see `Plugin`):
``splits``, ``supported_objectives``, ``requires``/``provides``,
``runs_after``/``runs_before``, ``conflicts_with`` and ``objective_weight``.
Where they name plugins or objectives, a name matches a class whose own name,
or one of whose base classes' names, it is (``"CausalLM"`` matches CausalLM
and its subclasses; ``"BiasMitigator"`` matches every bias mitigator).

Changes in lmforge 0.2 (the old forms work until 0.3, with a
``DeprecationWarning``; docs/plugins.md has the migration):

- ``StepContext.model`` (the whole LightningModule) gives way to
  ``ctx.objective``, ``ctx.step``, ``ctx.scored_mask``, ``ctx.scored_logits()``
  and ``ctx.forward``.
- ``setup`` receives the host view; attributes of the LightningModule beyond
  it (``model.log``, ``model.trainer``...) are deprecated.
- ``loss`` may return a `LossOutput` to log metrics beside its terms, instead
  of calling ``model.log``: the ``loss/*`` terms then add up to ``loss/total``.
"""

from __future__ import annotations

import inspect
import random
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import torch
from torch import Tensor, nn

from lmforge.core import static
from lmforge.core.hooks import HOOKS, KIND_BY_NAME, KINDS, hook_table, hooks_for

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase
    from transformers.modeling_outputs import ModelOutput
if static.TYPE_CHECKING:  # not run by the recipe parser: see lmforge.core.static
    import datasets

__doc__ = __doc__.replace("{HOOK_TABLE}", hook_table())

Batch = dict[str, Tensor]
Examples = dict[str, list[Any]]
Stage = Literal["train", "val", "test"]


def snake_case(name: str) -> str:
    """``L2Penalty`` -> ``l2_penalty``; ``CausalLM`` -> ``causal_lm``."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


class Host(Protocol):
    """What a plugin sees of the model that owns it, in ``setup``.

    Attributes:
        tokenizer: The run's tokenizer (a ``transformers`` fast tokenizer).
        backbone: The HF model, built (``setup`` runs once ``configure_model`` created it).
        objective: The recipe's objective plugin.
        device: Where the backbone's parameters are.
    """

    tokenizer: PreTrainedTokenizerBase
    backbone: nn.Module
    objective: Objective
    device: torch.device


class HostView:
    """The `Host` a plugin's ``setup`` receives: the documented attributes, read from the model that owns the
    plugins. Other attributes of that LightningModule still resolve, with a ``DeprecationWarning``, until 0.3."""

    _VIEW = ("tokenizer", "backbone", "objective", "device")

    def __init__(self, model: Any) -> None:
        self._model = model

    def __getattr__(self, name: str) -> Any:
        if name in HostView._VIEW:
            return getattr(self._model, name)
        if name.startswith("__"):
            raise AttributeError(name)
        warnings.warn(
            f"a plugin's setup read host.{name}, which is not part of the host view ({', '.join(HostView._VIEW)}); "
            "it works until lmforge 0.3. See docs/plugins.md, 'Migrating to lmforge 0.2'.",
            DeprecationWarning, stacklevel=2)
        return getattr(self._model, name)


@dataclass
class LossOutput:
    """What a ``loss`` hook returns when it has metrics to log beside its terms.

    Attributes:
        terms: The plugin's term(s) of the loss: a scalar (``loss/<name>``), a dict of named
            scalars (``loss/<name>/<key>``), or None. Every term is added to the training loss.
        metrics: Values to log that are not terms of the loss (an adversary's own loss or
            accuracy), as ``metric/<name>/<key>``; detached, never added to the loss.
    """

    terms: Tensor | dict[str, Tensor] | None = None
    metrics: dict[str, Tensor] = field(default_factory=dict)


class StepContext:
    """What a ``loss`` hook sees of one training step.

    Attributes:
        batch: The batch after the objective's ``prepare`` and the batch-stage
            plugins (``input_ids``, ``attention_mask``, ``labels``, ...).
        outputs: The backbone's output for ``batch``: ``logits`` (B, T, V) or (B, C)
            and, when a plugin sets ``needs_hidden_states``, ``hidden_states``.
        objective: The recipe's objective.
        objective_loss: The objective's term of the loss, before weighting.
        scored_mask: (B, T) bool: the positions whose predictions the objective's loss
            scores (``Objective.scored_mask``): a loss over hidden states or any other
            per-position tensor uses it to count exactly those positions.
        step: Optimizer steps taken so far.
        backbone: The HF model (read its parameters; run it again through ``forward``).
        forward: Runs the backbone again on a batch (R-Drop's second pass), returning
            outputs like ``outputs``.
    """

    def __init__(self, batch: Batch, outputs: ModelOutput, objective_loss: Tensor,
                 objective: Objective | None = None, forward: Callable[[Batch], ModelOutput] | None = None,
                 step: int = 0, backbone: nn.Module | None = None, scored_mask: Tensor | None = None,
                 model: Any = None) -> None:
        if objective is not None and not isinstance(objective, Objective):  # 0.1: StepContext(batch, out, loss, model)
            model, objective = objective, None
        if objective is None and model is not None:
            warnings.warn("StepContext(model=...) is deprecated and goes in lmforge 0.3: pass objective=, step=, "
                          "backbone= and forward=; see docs/plugins.md, 'Migrating to lmforge 0.2'.",
                          DeprecationWarning, stacklevel=2)
            objective, step = model.objective, int(getattr(model, "global_step", 0))
            backbone = getattr(model, "backbone", None)
        if objective is None:
            raise TypeError("StepContext needs objective= (the recipe's objective)")
        self.batch, self.outputs, self.objective_loss = batch, outputs, objective_loss
        self.objective, self.forward, self.step, self.backbone = objective, forward, step, backbone
        self._scored_mask = scored_mask
        self._model = model

    @property
    def scored_mask(self) -> Tensor:
        if self._scored_mask is None:  # computed when a plugin first asks: most steps need none
            self._scored_mask = self.objective.scored_mask(self.batch)
        return self._scored_mask

    def scored_logits(self, logits: Tensor | None = None) -> Tensor:
        """The (N, V) rows of ``logits`` (default: this step's ``outputs.logits``) that the loss scores, one per
        target, in the order of ``scored_mask`` (`Objective.scored_logits`)."""
        return self.objective.scored_logits(self.outputs.logits if logits is None else logits, self.batch)

    @property
    def model(self) -> Any:
        """Deprecated: the LightningModule itself. Use ``objective``, ``step``, ``backbone``, ``forward`` and
        ``scored_mask``; return a `LossOutput` to log metrics."""
        warnings.warn("StepContext.model is deprecated and goes in lmforge 0.3: use ctx.objective, ctx.step, "
                      "ctx.backbone, ctx.forward, ctx.scored_mask or ctx.scored_logits(), and return a LossOutput "
                      "to log metrics. See docs/plugins.md, 'Migrating to lmforge 0.2'.", DeprecationWarning,
                      stacklevel=2)
        if self._model is None:
            raise AttributeError("this StepContext was built without a model")
        return self._model

    def __repr__(self) -> str:
        return f"StepContext(batch={sorted(self.batch)}, step={self.step}, objective={type(self.objective).__name__})"


class Plugin(nn.Module):
    """Base of every plugin kind. Subclass one of the kinds below, not this.

    A plugin's public name is its class name; its log name (``loss/<name>``)
    is the class name in snake case.
    """

    kind: ClassVar[str] = ""
    #: Splits that ``process_text`` applies to (``train``, ``val``, ``test``).
    #: A kind may restrict them: augmenters process the training split only.
    splits: ClassVar[tuple[str, ...]] = ("train",)
    #: Set to True when ``loss`` reads ``ctx.outputs.hidden_states``; the
    #: forward pass only returns hidden states when a plugin asks for them
    #: (``"hidden_states"`` in ``requires`` does the same).
    needs_hidden_states: ClassVar[bool] = False
    #: Loss stage: when not None, the objective's term of the training loss is
    #: multiplied by this weight (a distiller's weight of the hard loss). Several
    #: plugins' weights multiply. ``loss/<objective>`` logs the weighted term, so
    #: the logged terms add up to ``loss/total``; ``ctx.objective_loss`` and
    #: ``metric/perplexity`` stay unweighted.
    objective_weight: float | None = None
    #: The objectives the plugin works with, as objective class names
    #: (``"CausalLM"``) or objective tasks (``"causal_lm"``, ``"masked_lm"``,
    #: ``"sequence_classification"``, ``"token_classification"``; see
    #: `Objective.task`). None: every objective. A recipe that pairs the plugin
    #: with another objective is refused before training.
    supported_objectives: ClassVar[tuple[str, ...] | None] = None
    #: What the plugin needs from the run, checked against the recipe before
    #: training: ``"hidden_states"`` (always available: the forward pass then
    #: returns them), ``"teacher"`` (a distiller in the recipe),
    #: ``"labels"`` (an objective that trains on labeled examples,
    #: ``Objective.layout == "padded"``), or a name another plugin ``provides``.
    requires: ClassVar[frozenset[str]] = frozenset()
    #: What the plugin makes available to other plugins (names in their ``requires``).
    provides: ClassVar[frozenset[str]] = frozenset()
    #: Plugins (by class name, or a base class's name such as a kind's) that
    #: must run before this one at every stage where both run (``process_text``,
    #: ``process_batch``, ``loss``). The host keeps recipe order and moves a
    #: plugin only as far as these demand; a cycle is refused naming the
    #: plugins. Names not in the recipe are ignored. Merged with the
    #: declarations of the plugin's base classes (see `declared`).
    runs_after: ClassVar[tuple[str, ...]] = ()
    #: Plugins (by class name) that must run after this one; see ``runs_after``.
    runs_before: ClassVar[tuple[str, ...]] = ()
    #: Plugins (by class name) this one cannot be combined with in one recipe.
    conflicts_with: ClassVar[tuple[str, ...]] = ()

    @property
    def name(self) -> str:
        return snake_case(type(self).__name__)

    def setup(self, model: Host) -> None:
        """Model stage: called once the backbone (``model.backbone``) is built.

        Create parameters whose shapes depend on the backbone here, so that the
        optimizer and sharded strategies see them; reconfigure the backbone;
        load a teacher.

        Args:
            model: The host view: ``tokenizer``, ``backbone`` (the HF model),
                ``objective`` and ``device``.
        """

    def process_text(self, examples: Examples, rng: random.Random, split: str = "train") -> Examples:
        """Data stage: rewrite, add or drop raw examples before tokenization.

        Args:
            examples: A batch of rows as columns (``{"text": [...], ...}``).
            rng: The only source of randomness to use; it is seeded from the
                run's seed, the plugin's position and the batch's position, so
                the processed dataset is the same on every run and rank.
            split: The split being processed (``train``, ``val``, ``test``).
                Optional, as in pluggy: the host passes it only to an
                implementation that declares it.

        Returns:
            Columns of equal length; the number of rows may differ from the
            input's (augmented copies, filtered rows).
        """
        return examples

    def data_report(self) -> dict[str, float] | None:
        """Data stage: what ``process_text`` counted since the last call (redactions by type, documents
        dropped), as figures by name; None for nothing to report.

        The host calls it once after each split's ``process_text`` pass and keeps the figures with the
        dataset cache, so a split read from the cache reports the same figures. They are saved with the run
        (``data_report.json``) and logged as ``data/<split>/<plugin>/<name>``.
        """
        return None

    def sample_weights(self, examples: datasets.Dataset) -> Sequence[float] | None:
        """Data stage: sampling weights for the processed training documents.

        Returns:
            One non-negative weight per row of ``examples`` or None to leave
            sampling uniform.
        """
        return None

    def process_batch(self, batch: Batch, generator: torch.Generator) -> Batch:
        """Batch stage: change a training batch on the device, every step.

        Args:
            batch: ``input_ids`` (B, T), ``attention_mask`` (B, T), ``labels``.
            generator: The step's random generator, on the batch's device.
        """
        return batch

    def loss(self, ctx: StepContext) -> Tensor | dict[str, Tensor] | LossOutput | None:
        """Loss stage: this plugin's term of the training loss.

        Args:
            ctx: The step: batch, outputs, objective and its unweighted loss,
                the scored positions (``ctx.scored_mask``, ``ctx.scored_logits()``),
                the step number and ``ctx.forward``.

        Returns:
            A scalar (logged as ``loss/<name>``), a dict of named scalars
            (logged as ``loss/<name>/<key>``, each added to the loss), a
            `LossOutput` (terms plus metrics logged as ``metric/<name>/<key>``,
            not added to the loss) or None. The logged ``loss/*`` terms add
            up to ``loss/total``.
        """
        return None

    def data_fingerprint(self) -> str:
        """A string that changes whenever ``process_text`` would change its output.

        Used to key the dataset cache. The default covers the plugin's class and
        its plain-valued attributes; override it when the output depends on
        anything else (a file's content, say).
        """
        plain = (int, float, str, bool, tuple, list, dict, type(None))
        state = sorted((k, repr(v)) for k, v in vars(self).items() if not k.startswith("_") and isinstance(v, plain))
        return f"{type(self).__module__}.{type(self).__qualname__}{state}"


@dataclass
class ObjectiveOutput:
    """The objective's result for one batch.

    Attributes:
        loss: Mean loss over the counted tokens or examples (a scalar).
        count: How many tokens/examples the mean is over; weights the
            validation mean so that it is a true mean over the whole split.
        nll: Mean negative log-likelihood when it differs from ``loss`` (label
            smoothing); perplexity is ``exp(nll)``.
        metrics: Extra metrics as ``name -> (value, weight)``.
    """

    loss: Tensor
    count: Tensor
    nll: Tensor | None = None
    metrics: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)


class Objective(Plugin):
    """Turns a batch into the training loss and its metrics.

    Class attributes tell the rest of the core what the objective needs:
    ``auto_model`` (the ``transformers`` Auto class the backbone is built
    with), ``tokenizer_algorithm`` (the default when a tokenizer is trained),
    ``layout`` (``packed`` blocks of text from TextData, or ``padded`` labeled
    examples from LabeledTextData) and ``metric_names`` (the keys of
    ``ObjectiveOutput.metrics``, logged as ``metric/<name>`` and
    ``val/<name>`` as batch-weighted means). Metrics that are not means of
    per-batch values (macro-F1, entity F1) come from ``epoch_metrics``.
    """

    kind: ClassVar[str] = "objective"
    #: What the objective trains the model to do, matched by plugins'
    #: ``supported_objectives``. None derives it from ``auto_model``:
    #: ``AutoModelForCausalLM`` -> ``causal_lm``, ``AutoModelForMaskedLM`` ->
    #: ``masked_lm``, ``AutoModelForSequenceClassification`` ->
    #: ``sequence_classification`` (see `objective_task`).
    task: ClassVar[str | None] = None
    auto_model: ClassVar[str] = "AutoModelForCausalLM"
    tokenizer_algorithm: ClassVar[str] = "bpe"
    layout: ClassVar[Literal["packed", "padded"]] = "packed"
    metric_names: ClassVar[tuple[str, ...]] = ()
    #: Whether perplexity (exp of the mean token NLL) is meaningful.
    reports_perplexity: ClassVar[bool] = True

    def prepare(self, batch: Batch, generator: torch.Generator) -> Batch:
        """Batch stage, every step (training and evaluation), on the device.

        Adds what ``compute`` needs (``labels``; MLM's fresh mask). Must not
        modify the input tensors in place.
        """
        return batch

    def model_inputs(self, batch: Batch) -> dict[str, Tensor]:
        """The keyword arguments of the backbone's forward for ``batch``."""
        inputs = {"input_ids": batch["input_ids"]}
        for key in ("attention_mask", "token_type_ids"):  # token types: the segments of a text pair
            if key in batch:
                inputs[key] = batch[key]
        return inputs

    def compute(self, outputs: ModelOutput, batch: Batch) -> ObjectiveOutput:
        """Loss stage: the objective's loss and metrics from the forward pass."""
        raise NotImplementedError(f"{type(self).__name__} must implement compute().")

    def scored_mask(self, batch: Batch) -> Tensor:
        """Loss stage: (B, T) bool, the positions whose predictions the loss scores.

        The default marks the positions whose ``labels`` are not -100 when the labels are per token
        (masked LM, token classification), and every attended position otherwise (a sequence-level
        objective reads the whole sequence). A causal objective overrides it: position t predicts
        the label at t+1.

        Args:
            batch: The prepared batch (with ``labels``).
        """
        ids = batch["input_ids"]
        labels = batch.get("labels")
        if labels is not None and labels.shape == ids.shape:
            return labels != -100
        mask = batch.get("attention_mask")
        return mask.bool() if mask is not None else torch.ones_like(ids, dtype=torch.bool)

    def scored_logits(self, logits: Tensor, batch: Batch) -> Tensor:
        """Loss stage: the rows of ``logits`` that the loss scores, one per target, as (N, V).

        Plugins that compare two output distributions (R-Drop, logit distillation) use it so that they
        count exactly the positions the objective predicts: per-position logits (B, T, V) are taken at
        ``scored_mask``; sequence-level logits (B, V) are all scored.

        Args:
            logits: (B, T, V) or (B, V) scores from the backbone for ``batch``.
            batch: The prepared batch (with ``labels``).
        """
        if logits.ndim == 2:  # one row per example: all scored, but for ignored examples' labels
            labels = batch.get("labels")
            return logits[labels != -100] if labels is not None and labels.shape == logits.shape[:-1] else logits
        return logits[self.scored_mask(batch)]

    def bind_data(self, datamodule: Any | None) -> None:
        """Model stage, first thing in ``configure_model``: read what the data defines.

        Args:
            datamodule: The trainer's DataModule (already set up, so its
                tokenizer and, for LabeledTextData, ``labels`` exist), or None
                when the model is built without one. A classification
                objective takes its label names here, or raises if the data
                has none.
        """

    def build_backbone_config(self, config: Any) -> None:
        """Model stage, before the backbone exists: adjust its HF config in place
        (a classification objective sets ``num_labels``, ``id2label``, ``label2id``).
        The config is saved in the checkpoint and written by ``lmforge export``."""

    def epoch_metrics(self) -> dict[str, Any]:
        """Model stage, after ``setup``: ``torchmetrics.Metric`` objects the objective owns.

        The core moves them to the device, passes them to ``update_epoch_metrics``
        on every validation/test batch, and at the end of the epoch computes,
        logs (``val/<name>``, ``test/<name>``; a recipe's checkpoint callback can
        monitor them) and resets them; torchmetrics syncs their states across
        ranks. Called once; the default is none.
        """
        return {}

    def update_epoch_metrics(self, metrics: dict[str, Any], outputs: ModelOutput, batch: Batch) -> None:
        """Evaluation, every validation/test batch: update ``metrics`` (what
        ``epoch_metrics`` returned) from the forward pass. No gradients."""


class Regularizer(Plugin):
    """Adds a penalty term (``loss``) or reconfigures the backbone (``setup``)."""

    kind: ClassVar[str] = "regularizer"


class Augmenter(Plugin):
    """Changes training text (``process_text``) or tokens (``process_batch``).

    Augmenters touch the training split only (their ``splits`` may name no
    other), and run after the bias mitigators, so that data is filtered and
    rewritten before it is augmented.
    """

    kind: ClassVar[str] = "augmenter"
    runs_after: ClassVar[tuple[str, ...]] = ("BiasMitigator",)


class BiasMitigator(Plugin):
    """Reduces learned bias: rewrites or filters data (``process_text``),
    reweights sampling (``sample_weights``) or adds an adversarial term
    (``loss``)."""

    kind: ClassVar[str] = "bias_mitigator"


class DataFilter(Plugin):
    """Finds and redacts, or drops, documents before tokenization (``process_text``), on every split, and
    reports what it did (``data_report``): personal data, unsafe or duplicate text.

    Data filters run first at the data stage, before bias mitigators and augmenters, so that no other plugin
    (counterfactual augmentation, say) copies what they remove.
    """

    kind: ClassVar[str] = "data_filter"
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    runs_before: ClassVar[tuple[str, ...]] = ("BiasMitigator", "Augmenter")


class Distiller(Plugin):
    """Adds a loss (``loss``) that pulls the model toward a frozen teacher,
    which it loads in ``setup``. The teacher is not part of the model's
    state dict. A distiller weights the objective's (hard) loss through
    ``objective_weight``."""

    kind: ClassVar[str] = "distiller"
    provides: ClassVar[frozenset[str]] = frozenset({"teacher"})


#: kind -> its base class (the kinds are declared in `lmforge.core.hooks`)
KIND_BASES: dict[str, type[Plugin]] = {kind.name: globals()[kind.base] for kind in KINDS}


def overrides(plugin: Plugin | type[Plugin], hook: str) -> bool:
    """Whether ``plugin`` implements ``hook`` rather than inheriting its kind's default."""
    cls = plugin if isinstance(plugin, type) else type(plugin)
    base = Objective if issubclass(cls, Objective) else Plugin
    found = getattr(cls, hook, None)
    # A hook the kind's base does not define (an objective's hook on a regularizer) is implemented when defined.
    return callable(found) and found is not getattr(base, hook, None)


def call_hook(method: Callable[..., Any], *arguments: Any, **optional: Any) -> Any:
    """Call a hook implementation with its required ``arguments`` and those ``optional`` ones it declares, as
    pluggy does: an optional hook argument (``process_text``'s ``split``) reaches only implementations that
    name it, so implementations written before it existed keep working."""
    parameters = inspect.signature(method).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        optional = {k: v for k, v in optional.items() if k in parameters}
    return method(*arguments, **optional)


def implemented_hooks(plugin: Plugin | type[Plugin]) -> list[str]:
    """The hooks (`lmforge.core.hooks.HOOKS`) ``plugin`` implements, in run order."""
    return [hook.name for hook in HOOKS if overrides(plugin, hook.name)]


def declared(plugin: Plugin | type[Plugin], attr: str) -> tuple[str, ...]:
    """``runs_after`` or ``runs_before`` as declared by the plugin's class and its base classes, in that order."""
    cls = plugin if isinstance(plugin, type) else type(plugin)
    names: list[str] = []
    for c in cls.__mro__:
        for name in vars(c).get(attr, ()):
            if name not in names:
                names.append(name)
    return tuple(names)


def objective_task(objective: Objective | type[Objective]) -> str:
    """The objective's ``task``, or its ``auto_model`` without ``AutoModelFor`` in snake case."""
    cls = objective if isinstance(objective, type) else type(objective)
    if cls.task:
        return cls.task
    return snake_case(cls.auto_model.removeprefix("AutoModelFor").removeprefix("AutoModel") or "base")


def class_names(plugin: Plugin | type[Plugin]) -> list[str]:
    """The names a plugin answers to in metadata: its class's and its base classes', up to ``Plugin``."""
    cls = plugin if isinstance(plugin, type) else type(plugin)
    return [c.__name__ for c in cls.__mro__ if isinstance(c, type) and issubclass(c, Plugin) and c is not Plugin]


def wants_hidden_states(plugin: Plugin) -> bool:
    """Whether the forward pass must return hidden states for ``plugin``."""
    return plugin.needs_hidden_states or "hidden_states" in plugin.requires


_NAME_TUPLES = ("runs_after", "runs_before", "conflicts_with")
_NAME_SETS = ("requires", "provides")


def metadata_problems(cls: type[Plugin]) -> list[str]:
    """What is wrong with the metadata ``cls`` declares, one sentence each (empty when nothing is)."""
    problems = []
    supported = cls.supported_objectives
    if supported is not None and not _is_names(supported):
        problems.append(f"supported_objectives must be None or a tuple of objective names or tasks, got "
                        f"{supported!r}" + (f"; write ({supported!r},)" if isinstance(supported, str) else ""))
    for attr in _NAME_SETS:
        value = getattr(cls, attr)
        if not _is_names(value):
            problems.append(f"{attr} must be a frozenset of names, got {value!r}"
                            + (f"; write frozenset({{{value!r}}})" if isinstance(value, str) else ""))
    for attr in _NAME_TUPLES:
        value = getattr(cls, attr)
        if not _is_names(value):
            problems.append(f"{attr} must be a tuple of plugin class names, got {value!r}"
                            + (f"; write ({value!r},)" if isinstance(value, str) else ""))
        elif set(value) & {cls.__name__}:
            problems.append(f"{attr} names the plugin itself ({cls.__name__!r})")
    if not _is_names(cls.splits) or not set(cls.splits) <= {"train", "val", "test"}:
        problems.append(f"splits must be a tuple of 'train', 'val' and 'test', got {cls.splits!r}")
    elif cls.kind == "augmenter" and set(cls.splits) != {"train"}:
        problems.append(f"splits must be ('train',) for an augmenter (augmenters touch the training split only), "
                        f"got {cls.splits!r}; a plugin that rewrites validation data is a bias mitigator")
    kind = KIND_BY_NAME.get(cls.kind)
    if kind is not None:
        allowed = {hook.name for hook in hooks_for(kind.name)}
        wrong = [hook for hook in implemented_hooks(cls) if hook not in allowed]
        if wrong:
            problems.append(f"implements {', '.join(wrong)}, which a {kind.name.replace('_', ' ')} may not "
                            "(see lmforge.core.hooks.HOOKS)")
    return problems


def _is_names(value: Any) -> bool:
    return isinstance(value, (tuple, list, set, frozenset)) and all(isinstance(v, str) and v for v in value)
