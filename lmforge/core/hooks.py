"""The plugin contract as data: the kinds of plugin and the hooks the host calls, declared once.

Everything else is derived from these two tables: the entry-point groups the
registry reads (`GROUPS`), the recipe keys that hold each kind, the hook table
in `lmforge.core.plugins`' docstring, the stage a failing hook is reported at
(`lmforge.core.plugin_checks.hook_guard`), what ``lmforge plugins show`` says
about a plugin's hooks, and which checks of the conformance kit
(`lmforge.testing`) exercise each hook.

This module imports nothing (not even torch), so that ``lmforge plugins`` and
``lmforge --help`` can read it at once.
"""

from __future__ import annotations

from dataclasses import dataclass

STAGES = ("data", "model", "batch", "loss", "eval")


@dataclass(frozen=True)
class Kind:
    """A kind of plugin.

    Attributes:
        name: The kind's name (``regularizer``), as ``lmforge plugins --kind`` takes it.
        base: Its base class in `lmforge.core.plugins`.
        group: The entry-point group plugins of this kind register under.
        recipe_key: The key under ``model`` that holds it (``model.regularizers``).
        many: Whether the recipe takes a list of them (else one, or null).
        summary: What plugins of this kind do.
    """

    name: str
    base: str
    group: str
    recipe_key: str
    many: bool
    summary: str


KINDS: tuple[Kind, ...] = (
    Kind("objective", "Objective", "lmforge.objectives", "objective", False,
         "turns a batch into the training loss and its metrics"),
    Kind("regularizer", "Regularizer", "lmforge.regularizers", "regularizers", True,
         "adds a penalty term, or reconfigures the model"),
    Kind("augmenter", "Augmenter", "lmforge.augmenters", "augmenters", True,
         "changes training text or tokens, training split only"),
    Kind("bias_mitigator", "BiasMitigator", "lmforge.bias_mitigators", "bias_mitigators", True,
         "reduces learned bias: data rewrite, filtering, reweighting, adversary"),
    Kind("distiller", "Distiller", "lmforge.distillers", "distiller", False,
         "adds a loss that pulls the model toward a frozen teacher"),
    Kind("data_filter", "DataFilter", "lmforge.data_filters", "data_filters", True,
         "finds and redacts or drops documents before tokenization, on every split"),
)
KIND_BY_NAME = {kind.name: kind for kind in KINDS}
#: kind -> entry-point group
GROUPS: dict[str, str] = {kind.name: kind.group for kind in KINDS}
#: kind -> key under ``model`` in a recipe
RECIPE_KEYS: dict[str, str] = {kind.name: kind.recipe_key for kind in KINDS}
PLUGIN_KINDS = tuple(kind.name for kind in KINDS if kind.name != "objective")


@dataclass(frozen=True)
class Hook:
    """A hook the host calls.

    Attributes:
        name: The method's name.
        stage: ``data`` (before tokenization, once per dataset), ``model`` (building the model),
            ``batch`` (every step, on the device), ``loss`` (every training step, after the
            forward pass) or ``eval`` (every validation/test batch).
        kinds: The kinds whose plugins may implement it.
        when: Who calls it, and when.
        sees: What it is given, and what it may use.
        returns: What it returns.
        checks: The conformance kit's checks that exercise it (`lmforge.testing`).
    """

    name: str
    stage: str
    kinds: tuple[str, ...]
    when: str
    sees: str
    returns: str
    checks: tuple[str, ...] = ()


OBJECTIVE = ("objective",)

#: Every hook, in the order of one run.
HOOKS: tuple[Hook, ...] = (
    Hook("process_text", "data", PLUGIN_KINDS,
         "the DataModule, once per dataset, before tokenization, on the splits in the plugin's ``splits``, in "
         "run order (data filters, then bias mitigators, then augmenters)",
         "a batch of rows as columns (``text`` and the data's other columns), a seeded ``random.Random`` and, "
         "when the method declares it, the ``split`` (``train``, ``val``, ``test``); not the model",
         "columns of equal length (rows may be added or dropped), every column kept",
         ("process_text", "validation split untouched")),
    Hook("data_report", "data", PLUGIN_KINDS,
         "the DataModule, after ``process_text`` ran over a split (and when that split was read from the cache)",
         "nothing: what the plugin counted in the ``process_text`` calls since the last report",
         "figures by name (``{'EMAIL': 12.0}``), saved with the run (``data_report.json``, per split) and "
         "logged as ``data/<split>/<plugin>/<name>``; or None",
         ("process_text",)),
    Hook("sample_weights", "data", PLUGIN_KINDS,
         "the DataModule, once, on the processed training documents",
         "the training documents (a ``datasets.Dataset`` with their columns); not the model",
         "one finite, non-negative weight per row, or None (uniform sampling)",
         ("sample_weights",)),
    Hook("bind_data", "model", OBJECTIVE,
         "``configure_model``, first, with the attached DataModule",
         "the DataModule, set up (its tokenizer; ``labels`` for LabeledTextData), or None",
         "None; raises when the data lacks what the objective needs",
         ("training step",)),
    Hook("build_backbone_config", "model", OBJECTIVE,
         "``configure_model``, before the backbone is built",
         "the backbone's HF config, to adjust in place (``num_labels``, ``id2label``)",
         "None",
         ("training step",)),
    Hook("setup", "model", ("objective", *PLUGIN_KINDS),
         "``configure_model``, once the backbone exists, in run order",
         "the host view (`Host`): ``tokenizer``, ``backbone`` (the HF model), ``objective`` and ``device``",
         "None; parameters it creates are trained and checkpointed with the model",
         ("training step", "state_dict round-trip")),
    Hook("epoch_metrics", "model", OBJECTIVE,
         "``configure_model``, after ``setup``, once",
         "nothing",
         "``torchmetrics.Metric`` objects by name (logged as ``val/<name>``, ``test/<name>``)",
         ("training step",)),
    Hook("prepare", "batch", OBJECTIVE,
         "every training and evaluation step, on the device, first",
         "the collated batch and the step's ``torch.Generator``",
         "the batch with what ``compute`` needs (``labels``; masked LM's fresh mask); the input tensors unchanged",
         ("training step", "loss")),
    Hook("process_batch", "batch", PLUGIN_KINDS,
         "every training step, on the device, after ``prepare``, in run order",
         "the prepared batch (``input_ids`` (B, T), ``attention_mask``, ``labels`` as the objective laid them "
         "out) and the step's ``torch.Generator``",
         "the batch, with the same keys and batch size and ids in the vocabulary",
         ("process_batch",)),
    Hook("model_inputs", "batch", OBJECTIVE,
         "every step, before the forward pass",
         "the prepared batch",
         "the keyword arguments of the backbone's forward",
         ("training step", "loss")),
    Hook("compute", "loss", OBJECTIVE,
         "every step, after the forward pass",
         "the backbone's outputs and the prepared batch",
         "an ``ObjectiveOutput``: the mean loss, its count, optional NLL and metrics",
         ("training step", "loss", "gradient flow")),
    Hook("scored_mask", "loss", OBJECTIVE,
         "every training step, for ``StepContext.scored_mask``",
         "the prepared batch",
         "a (B, T) bool mask of the positions whose predictions the loss scores",
         ("loss",)),
    Hook("scored_logits", "loss", OBJECTIVE,
         "by plugins that compare output distributions (``StepContext.scored_logits``)",
         "logits (B, T, V) or (B, V) and the prepared batch",
         "the (N, V) rows the loss scores, one per target",
         ("loss",)),
    Hook("loss", "loss", PLUGIN_KINDS,
         "every training step, after the forward pass and the objective's ``compute``, in run order",
         "a `StepContext`: the batch, the outputs, the objective and its unweighted loss, the scored positions, "
         "the step and ``forward`` (another pass of the backbone)",
         "a scalar, a dict of named scalars (each a term of the loss), a `LossOutput` (terms plus metrics to "
         "log), or None",
         ("loss", "gradient flow")),
    Hook("update_epoch_metrics", "eval", OBJECTIVE,
         "every validation/test batch",
         "the metrics of ``epoch_metrics``, the outputs and the prepared batch; no gradients",
         "None",
         ()),
)
HOOK_BY_NAME = {hook.name: hook for hook in HOOKS}
#: hook -> stage
STAGE_OF: dict[str, str] = {hook.name: hook.stage for hook in HOOKS}

#: The kit's checks that do not belong to one hook, in the order they run.
GENERAL_CHECKS = {
    "metadata": "the class's metadata (``supported_objectives``, ``requires``, ``runs_after``, ...) is well "
                "formed, and the hooks it implements are ones its kind may implement",
    "pickle": "the plugin pickles and unpickles with the same state (spawn-based strategies pickle the model)",
    "training step": "one training step of a tiny model with the plugin (Lightning, ``max_steps=1``) gives a "
                     "finite loss and finite gradients",
    "validation split untouched": "the validation batches equal those without the plugin, unless its "
                                  "``splits`` include ``val``",
    "state_dict round-trip": "the trained model's state loads strictly into a freshly built one, and the "
                             "plugin's state matches",
}


def hooks_for(kind: str) -> tuple[Hook, ...]:
    """The hooks a plugin of ``kind`` may implement."""
    return tuple(hook for hook in HOOKS if kind in hook.kinds)


def hook_table() -> str:
    """The hooks as a reStructuredText table (the docstring of `lmforge.core.plugins`)."""
    rows = [(f"``{h.name}``", h.stage, "objective" if h.kinds == OBJECTIVE else "all kinds" if
             set(h.kinds) >= set(PLUGIN_KINDS) else ", ".join(h.kinds), h.when) for h in HOOKS]
    widths = [max(len(r[i]) for r in [*rows, ("hook", "stage", "kinds", "called by / when")]) for i in range(3)]
    rule = "  ".join("=" * w for w in widths) + "  " + "=" * 40
    head = "  ".join(t.ljust(w) for t, w in zip(("hook", "stage", "kinds"), widths)) + "  called by / when"
    body = ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
    return "\n".join([rule, head, rule, *body, rule])
