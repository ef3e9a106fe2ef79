"""LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") through ``peft``.

A frozen weight W gets a trainable low-rank update, ``W x + (alpha / r) B A x`` with A (r x in) and
B (out x r), B starting at zero so that training starts from the base model. lmforge does not write
LoRA itself: `apply_lora` injects ``peft``'s LoRA layers into the HF model in place
(``peft.inject_adapter_in_model``, the API ``peft`` keeps for frameworks that hold the model
themselves, as ``transformers``' own adapter support does). The model stays the HF model (its class,
``config``, ``base_model``, blocks and ``generate``): only the targeted layers become ``peft`` LoRA
layers holding the frozen original as ``base_layer``. Every other parameter is frozen.

For export, `save_adapter` writes a ``peft`` adapter directory (``adapter_config.json`` and
``adapter_model.safetensors``) that ``peft.PeftModel.from_pretrained(base_model, directory)`` loads,
and `merge_lora` folds the updates into the base weights, leaving a plain HF model.

Checkpoints (`checkpoint_record`, `restore_base`): a run with LoRA saves only the trainable backbone
weights, with a record of the adapters and of the base model (its directory and a fingerprint of its
weight files, `lmforge.core.checkpoint.weights_fingerprint`); loading checks both and takes the frozen
weights from the base model the run built.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from torch import Tensor, nn

from lmforge.core.checkpoint import BACKBONE_PREFIX, CKPT_KEY, LORA_KEY, weights_fingerprint

if TYPE_CHECKING:
    from peft import LoraConfig

KEY = "model.backbone.lora"
#: The prefix ``peft.PeftModel`` puts before the HF model's parameter names in an adapter file.
PEFT_PREFIX = "base_model.model."
#: The ``peft`` task type of each Auto class an objective builds (None: no task head to know about).
TASK_TYPES = {"AutoModelForCausalLM": "CAUSAL_LM", "AutoModelForSequenceClassification": "SEQ_CLS",
              "AutoModelForTokenClassification": "TOKEN_CLS"}


@dataclass
class LoraSpec:
    """Low-rank adapters on some of the backbone's layers; everything else is frozen.

    Args:
        r: Rank of the update.
        alpha: Scale of the update: it is multiplied by ``alpha / r`` (``alpha / sqrt(r)`` with
            ``use_rslora``).
        dropout: Dropout on the adapters' input.
        target_modules: The layers that get adapters: a list of names, each matching a module whose
            qualified name ends with it (``[c_attn]`` for gpt2, ``[q_proj, v_proj]`` for llama); a string,
            matched as a regular expression against the whole qualified name
            (``'.*\\.(q|k|v|o)_proj'``); or ``all-linear`` (every linear layer but the output head). None
            takes ``peft``'s default for the architecture.
        bias: Which biases train: ``none``, ``all`` or ``lora_only`` (those of adapted layers).
        use_dora: Weight-decomposed LoRA (DoRA, Liu et al. 2024).
        use_rslora: Rank-stabilised scaling, ``alpha / sqrt(r)`` (Kalajdzievski 2023).
        modules_to_save: Modules trained in full besides the adapters and saved with them (a new
            classification head, e.g. ``[score]`` or ``[classifier]``; a causal LM's output layer,
            ``[lm_head]``). A layer tied to the input embeddings (gpt2's and many small models' ``lm_head``)
            trains as one matrix with them: ``peft`` (``ensure_weight_tying``) wraps both and ties the
            trained copies. Naming the input embeddings of a tied model (gpt2's ``wte``) is refused: ``peft``
            would train a copy of them that the output layer does not see.
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] | str | None = None
    bias: Literal["none", "all", "lora_only"] = "none"
    use_dora: bool = False
    use_rslora: bool = False
    modules_to_save: list[str] | None = None

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"{KEY}.r must be at least 1, got {self.r}.")
        if not self.alpha > 0:
            raise ValueError(f"{KEY}.alpha must be positive, got {self.alpha}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{KEY}.dropout must be in [0, 1), got {self.dropout}.")
        if self.bias not in ("none", "all", "lora_only"):
            raise ValueError(f"{KEY}.bias must be none, all or lora_only, got {self.bias!r}.")
        if isinstance(self.target_modules, list) and not self.target_modules:
            raise ValueError(f"{KEY}.target_modules must name at least one module, got []. Leave it out for "
                             "peft's default for the architecture.")
        if isinstance(self.target_modules, str) and self.target_modules != "all-linear":
            try:
                re.compile(self.target_modules)
            except re.error as exc:
                raise ValueError(f"{KEY}.target_modules: {self.target_modules!r} is not a valid regular expression "
                                 f"({exc}).") from None


def lora_config(spec: LoraSpec, auto_model: str | None = None) -> LoraConfig:
    """The ``peft.LoraConfig`` of ``spec``; ``auto_model`` (the objective's Auto class) sets its task type."""
    from peft import LoraConfig

    target = list(spec.target_modules) if isinstance(spec.target_modules, list) else spec.target_modules
    return LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=target,
                      bias=spec.bias, use_dora=spec.use_dora, use_rslora=spec.use_rslora,
                      modules_to_save=list(spec.modules_to_save) if spec.modules_to_save else None,
                      ensure_weight_tying=bool(spec.modules_to_save), task_type=TASK_TYPES.get(auto_model or ""))


def apply_lora(model: nn.Module, spec: LoraSpec, auto_model: str | None = None) -> nn.Module:
    """Inject LoRA layers into ``model`` in place and freeze every other parameter.

    Returns:
        ``model`` itself (the same object, with its targeted layers replaced).

    Raises:
        ValueError: No layer matches ``target_modules`` (the message lists the layer names there are),
            or ``peft`` has no default targets for the architecture.
    """
    from peft import inject_adapter_in_model

    config = lora_config(spec, auto_model)
    try:
        with warnings.catch_warnings():
            # gpt2's Conv1D layers store W transposed; peft notices and sets fan_in_fan_out itself.
            warnings.filterwarnings("ignore", message="fan_in_fan_out is set to")
            # ensure_weight_tying is set whenever modules_to_save is; a classifier's head is tied to nothing.
            warnings.filterwarnings("ignore", message="You have requested `ensure_weight_tying`")
            _refuse_untied_embeddings(model, spec)
            named = copy.copy(config.modules_to_save)
            inject_adapter_in_model(config, model)
            # peft rewrites a tied output layer in modules_to_save as the input embeddings (gpt2: lm_head ->
            # transformer.wte), a name that it ties again only for embed_tokens; keep the names given, so that
            # the config saved with checkpoints and adapters rebuilds the same tied pair.
            model.peft_config["default"].modules_to_save = named
    except ValueError as exc:
        if spec.target_modules is None:
            raise ValueError(f"{KEY}.target_modules: peft has no default layers to adapt for "
                             f"{type(model).__name__} ({exc}); name them, e.g. one of {layer_names(model)}.") from None
        if "not found" in str(exc) or "did not match" in str(exc) or "no module" in str(exc).lower():
            names = layer_names(model)
            raise ValueError(f"{KEY}.target_modules: {spec.target_modules!r} matches no layer of "
                             f"{type(model).__name__}; its adaptable layers are named {names}. Give some of "
                             "these names, or a regular expression matched against whole qualified names "
                             f"(e.g. '.*\\.{names[0]}').") from None
        raise
    return model


def _refuse_untied_embeddings(model: nn.Module, spec: LoraSpec) -> None:
    """Refuse ``modules_to_save`` naming the input embeddings of a model whose output layer shares their matrix:
    ``peft`` ties the trained copies only when the output layer is named (it recognises ``lm_head`` and
    ``embed_tokens``, not gpt2's ``wte``), and would otherwise train a copy the output layer never reads."""
    config = getattr(model, "config", None)
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not spec.modules_to_save or output is None or not getattr(config, "tie_word_embeddings", False):
        return
    embeddings = model.get_input_embeddings()
    if output.weight is not embeddings.weight:
        return
    names = {name: module for name, module in model.named_modules() if name}
    embedding_names = [n for n, m in names.items() if m is embeddings]
    output_names = [n for n, m in names.items() if m is output]
    named = [m for m in spec.modules_to_save if any(n == m or n.endswith("." + m) for n in embedding_names)]
    if named and not any(n == m or n.endswith("." + m) for n in output_names for m in spec.modules_to_save):
        out = output_names[0].rsplit(".", 1)[-1]
        raise ValueError(
            f"{KEY}.modules_to_save: {named} are the input embeddings, which this model ties to its output layer "
            f"({out!r}); peft would train a copy of them that the output layer does not read. Name the output "
            f"layer instead, modules_to_save: [{out}]: the tied matrix then trains once, for both.")


def layer_names(model: nn.Module) -> list[str]:
    """The distinct last names of the layers LoRA can adapt (linear, gpt2's Conv1D, embeddings)."""
    from transformers.pytorch_utils import Conv1D

    kinds = (nn.Linear, nn.Embedding, Conv1D)
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, kinds) and name})


def head_modules(model: nn.Module) -> list[str]:
    """The names of the model's modules outside its base model that hold parameters: a classifier's new head
    (``score``, ``classifier``, ``pre_classifier``), what ``modules_to_save`` must name for it to train.

    A causal LM's is its output layer (``lm_head``), often tied to the input embeddings: not one to train in full.
    """
    base = getattr(model, "base_model_prefix", None)
    return [name for name, child in model.named_children()
            if name != base and any(True for _ in child.parameters())]


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters of ``model``, each shared tensor counted once."""
    params = list(model.parameters())  # nn.Module.parameters() yields a tied tensor once
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def adapter_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The adapters' weights (and those of ``modules_to_save``), named as ``peft`` names them without an
    adapter name: ``transformer.h.0.attn.c_attn.lora_A.weight``. `load_adapter_state_dict` takes them back."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model)


def load_adapter_state_dict(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Load `adapter_state_dict`'s weights into a model that `apply_lora` prepared with the same spec.

    Raises:
        ValueError: An adapter weight of ``model`` is missing from ``state``, or ``state`` has weights
            ``model`` has no place for.
    """
    from peft import set_peft_model_state_dict

    expected = set(adapter_state_dict(model))
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"{KEY}: the adapter weights do not fit this model's adapters (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}); use the same model.backbone.lora settings as in training.")
    set_peft_model_state_dict(model, state)


def save_adapter(model: nn.Module, spec: LoraSpec, out_dir: str | Path, auto_model: str | None = None,
                 base_model: str | None = None) -> Path:
    """Write a ``peft`` adapter directory that ``peft.PeftModel.from_pretrained(base, out_dir)`` loads.

    Args:
        model: A model that `apply_lora` prepared with ``spec``.
        auto_model: The Auto class of the base model (sets the adapter's task type, which
            ``peft.AutoPeftModelForCausalLM`` and ``PeftModel`` use to pick their class).
        base_model: Where the base model lives (recorded as ``base_model_name_or_path``), if known.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = lora_config(spec, auto_model)
    config.base_model_name_or_path = base_model
    config.fan_in_fan_out = _fan_in_fan_out(model)
    config.save_pretrained(str(out_dir))
    state = {PEFT_PREFIX + k: v.detach().contiguous().cpu() for k, v in adapter_state_dict(model).items()}
    save_file(state, str(out_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    return out_dir


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold the adapters into the base weights and remove every ``peft`` layer, in place.

    Returns:
        ``model``, now a plain HF model whose adapted layers hold ``W + (alpha / r) B A`` (and whose
        ``modules_to_save`` are their trained copies).
    """
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils import ModulesToSaveWrapper

    wrapped = [name for name, m in model.named_modules() if isinstance(m, (BaseTunerLayer, ModulesToSaveWrapper))]
    for name in wrapped:
        module = model.get_submodule(name)
        if isinstance(module, BaseTunerLayer):
            module.merge(safe_merge=True)  # safe: refuses a merge that would give non-finite weights
            plain = module.get_base_layer()
        else:
            plain = module.modules_to_save[module.active_adapter]
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, plain)
    if hasattr(model, "peft_config"):
        del model.peft_config
    return model


def _fan_in_fan_out(model: nn.Module) -> bool:
    """Whether the adapted layers store their weight as (in, out), as gpt2's Conv1D does."""
    from peft.tuners.lora import LoraLayer

    return any(getattr(m, "fan_in_fan_out", False) for m in model.modules() if isinstance(m, LoraLayer))


# -- checkpoints ----------------------------------------------------------------------------------


def trainable_names(model: nn.Module) -> list[str]:
    """The names of ``model``'s trainable parameters: the adapters (and ``modules_to_save``), a tied matrix under
    each of its names (so that a checkpoint restores every name of it with the trained values)."""
    return [name for name, p in model.named_parameters(remove_duplicate=False) if p.requires_grad]


def adapter_config_dict(model: nn.Module) -> dict[str, Any]:
    """The ``peft`` config of the adapters `apply_lora` put into ``model`` (defaults filled in, such as a
    classifier's head in ``modules_to_save``) as plain JSON values, as in ``adapter_config.json``: what
    `lmforge.core.checkpoint.adapted_model_from_checkpoint` rebuilds the adapters from."""
    config = copy.deepcopy(model.peft_config["default"])
    config.fan_in_fan_out = _fan_in_fan_out(model)
    return json.loads(json.dumps(config.to_dict(), default=_plain))


def checkpoint_record(state_dict: dict[str, Any], backbone: nn.Module, spec: LoraSpec, pretrained: str
                      ) -> dict[str, Any]:
    """Leave only the backbone's trainable weights in a checkpoint's ``state_dict`` (in place) and return the
    LoRA record of the checkpoint's ``lmforge`` section.

    Args:
        state_dict: The LightningModule's state (``backbone.``-prefixed backbone weights, plugins' weights).
        pretrained: The base model's directory (``model.backbone.pretrained``).
    """
    keep = {BACKBONE_PREFIX + name for name in trainable_names(backbone)}
    for key in [k for k in state_dict if k.startswith(BACKBONE_PREFIX) and k not in keep]:
        del state_dict[key]
    return {"spec": dataclasses.asdict(spec), "adapter_config": adapter_config_dict(backbone),
            "base": {"pretrained": str(Path(pretrained).resolve()), "fingerprint": weights_fingerprint(pretrained)}}


def restore_base(checkpoint: dict[str, Any], spec: LoraSpec | None, pretrained: str | None,
                 module: nn.Module, backbone: nn.Module) -> None:
    """Check a checkpoint against this run's LoRA settings and put the frozen base weights, which a LoRA
    checkpoint leaves out, into its ``state_dict`` (from ``module``, whose backbone the run built from the
    base model), so that the LightningModule loads it strictly.

    Args:
        spec: This run's ``model.backbone.lora``.
        pretrained: This run's ``model.backbone.pretrained``.
        module: The LightningModule the checkpoint is loaded into.
        backbone: Its backbone (``module.backbone``).

    Raises:
        ValueError: LoRA in one of the two and not the other, other LoRA settings, missing adapter weights,
            or a base model whose weights are not those the adapters were trained on.
    """
    record = checkpoint.get(CKPT_KEY, {}).get(LORA_KEY)
    if record is None and spec is None:
        return
    if record is None:
        raise ValueError(f"{KEY}: this run trains LoRA adapters, but the checkpoint holds a model trained without "
                         "them; resume it without model.backbone.lora, or start LoRA from a model directory "
                         "(lmforge export CKPT DIR, then model.backbone.pretrained: DIR).")
    if spec is None:
        raise ValueError(f"{KEY}: the checkpoint holds LoRA adapters ({record['spec']}) but this run sets no "
                         f"model.backbone.lora; set it as in training.")
    differ = {k: (v, record["spec"].get(k)) for k, v in dataclasses.asdict(spec).items() if record["spec"].get(k) != v}
    if differ:
        shown = ", ".join(f"{k}: {old!r} in the checkpoint, {new!r} here" for k, (new, old) in differ.items())
        raise ValueError(f"{KEY}: must be the checkpoint's LoRA settings, got other ones ({shown}).")
    fingerprint = weights_fingerprint(pretrained)
    if fingerprint != record["base"]["fingerprint"]:
        raise ValueError(
            f"model.backbone.pretrained: the checkpoint's adapters were trained on the base model at "
            f"{record['base']['pretrained']} (weights {record['base']['fingerprint'][:19]}), but the weights in "
            f"{pretrained} differ ({fingerprint[:19]}); set model.backbone.pretrained to the base model they were "
            "trained on."
        )
    state = checkpoint["state_dict"]
    adapters = {BACKBONE_PREFIX + name for name in trainable_names(backbone)}
    missing = sorted(adapters - set(state))
    if missing:
        raise ValueError(f"{KEY}: the checkpoint lacks adapter weights of this model ({missing[:3]}"
                         f"{', ...' if len(missing) > 3 else ''}); it was not written by a run with these settings.")
    for key, value in module.state_dict().items():
        if key.startswith(BACKBONE_PREFIX) and key not in adapters and key not in state:
            state[key] = value


def _plain(value: Any) -> Any:
    """JSON for what ``peft``'s config dict holds beyond JSON (sets of module names, enums)."""
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return getattr(value, "value", str(value))
