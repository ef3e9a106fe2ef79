"""The backbone: an HF ``transformers`` model, built from a config, loaded
from a local pretrained directory, built from a subset of a trained model's
layers (DistilBERT's student initialization), or started from the weights of an
lmforge checkpoint (fine-tuning after ``lmforge fit --config mlm-pretrain``).
With ``lora``, low-rank adapters are put into the built model and everything else
is frozen (`lmforge.core.lora`). Nothing is downloaded."""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import transformers
from torch import nn
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from lmforge.core.checkpoint import (
    CKPT_KEY,
    LM_AUTO_MODELS,
    backbone_state_dict,
    check_checkpoint_fits,
    check_vocabulary,
    checkpoint_config,
    load_checkpoint,
    load_trained,
    trained_config,
)
from lmforge.core.lora import KEY as LORA_RECIPE_KEY
from lmforge.core.lora import TASK_TYPES, LoraSpec, apply_lora, head_modules, parameter_counts
from lmforge.core.source_config import apply_overrides

log = logging.getLogger(__name__)

#: Config keys under which architectures store their maximum sequence length.
POSITION_KEYS = ("n_positions", "max_position_embeddings", "n_ctx", "seq_length")
INIT_KEY = "model.backbone.init_from"


@dataclass
class Backbone:
    """The network the objective trains.

    Args:
        architecture: A ``transformers`` model type (``gpt2``, ``llama``,
            ``bert``, ...), built from its default config plus ``config``.
        config: Overrides of the architecture's config (``n_layer``,
            ``hidden_size``, ...). The vocabulary size and special token ids
            always come from the tokenizer. With ``pretrained`` or
            ``checkpoint`` that model fixes the architecture: keys that would
            change it (sizes, layer and head counts, positions) are ignored
            with a warning, the others (dropout, ...) apply.
        pretrained: A local directory with a pretrained model
            (``from_pretrained``); replaces ``architecture``, and its config
            replaces ``config``'s sizes.
        trust_remote_code: Allow a pretrained directory to run its own code.
            Off unless the recipe turns it on; the run log says when it is on.
        attn_implementation: Attention kernel (``sdpa``, ``eager``, ...).
        init_from: A trained model (a local HF directory or an lmforge
            checkpoint) to build a shallower student from, as DistilBERT does:
            its config, embeddings, final norm and head, and the blocks listed
            in ``layers``. Replaces ``architecture``; ``config`` still
            overrides keys other than the layer count. The run must use that
            model's tokenizer (``data.init_args.tokenizer.path``).
        layers: The blocks of ``init_from`` the student keeps, in order,
            counted from 0 (the embeddings are not a block); default every
            other one: 0, 2, 4, ...
        checkpoint: An lmforge checkpoint (``.ckpt``, e.g. a pre-training
            run's ``checkpoints/last.ckpt``) to start from: its saved config
            replaces ``architecture`` and ``config``'s sizes (``config``'s
            other keys, e.g. dropout, still apply),
            the base model's weights are loaded and the objective's head is new
            (a pre-training head is dropped). Give the run's tokenizer too
            (``data.init_args.tokenizer.path: runs/<name>/version_N/tokenizer``).
        freeze_embeddings: Keep the base model's embeddings (everything before
            the first block) fixed.
        freeze_layers: Keep the first N transformer blocks fixed.
        lora: Train low-rank adapters (LoRA, through ``peft``) instead of the model's
            weights, which stay frozen; needs ``pretrained``. Applied when the backbone
            is built, before plugins' ``setup`` and the optimizer. For a classifier,
            ``modules_to_save`` defaults to its new head (``score``, ``classifier``).
    """

    architecture: str | None = "gpt2"
    config: dict[str, Any] = field(default_factory=dict)
    pretrained: str | None = None
    trust_remote_code: bool = False
    attn_implementation: str | None = "sdpa"
    init_from: str | None = None
    layers: list[int] | None = None
    checkpoint: str | None = None
    freeze_embeddings: bool = False
    freeze_layers: int = 0
    lora: LoraSpec | None = None

    def __post_init__(self) -> None:
        if isinstance(self.lora, dict):  # from a checkpoint's hyperparameters
            self.lora = LoraSpec(**self.lora)
        if self.lora is not None and self.pretrained is None:
            raise ValueError(
                f"{LORA_RECIPE_KEY}: LoRA adapts a trained model kept in a directory, so model.backbone.pretrained "
                "must be set, got none. Give a local HF model directory (--model.backbone.pretrained DIR "
                "--data.init_args.tokenizer.path DIR); for an lmforge checkpoint, export it first: "
                "lmforge export CKPT DIR."
            )
        if self.freeze_layers < 0:
            raise ValueError(f"model.backbone.freeze_layers must be >= 0, got {self.freeze_layers}.")
        if self.checkpoint is not None and self.pretrained is not None:
            raise ValueError("model.backbone: set checkpoint (an lmforge .ckpt) or pretrained (an HF directory), "
                             "not both.")
        if self.checkpoint is not None and self.init_from is not None:
            raise ValueError("model.backbone: set checkpoint (start from a whole model) or init_from (build a student "
                             "from some of its blocks), not both.")


@dataclass
class LoadReport:
    """What `load_base_weights` did, by parameter name (base-model names, without the prefix).

    Attributes:
        loaded: Base-model weights taken from the checkpoint.
        missing: Base-model weights the checkpoint lacks (newly initialised,
            e.g. BERT's pooler after masked-LM pre-training).
        unexpected: Base-model weights in the checkpoint this model has no place for.
        dropped: Checkpoint weights outside the base model (the pre-training head).
        new_head: Weights outside the base model in this model (the new head).
    """

    loaded: list[str]
    missing: list[str]
    unexpected: list[str]
    dropped: list[str]
    new_head: list[str]


def max_positions(config: PretrainedConfig) -> int | None:
    for key in POSITION_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def position_limit(spec: Backbone) -> int | None:
    """The model's number of positions, from its config alone: no tokenizer, no weights.

    Raises the errors `build_config` would (an unknown architecture, a missing pretrained directory), so
    that a recipe that cannot build fails before any data is read. None when the config cannot be known
    without more (a spec that builds from a trained model's layers is checked once its config is built).
    """
    if getattr(spec, "init_from", None) is not None:
        return None
    if spec.checkpoint is not None:  # the checkpoint's saved config (the file's tensors are only mapped)
        config = _saved_config(spec, checkpoint_config(load_checkpoint(spec.checkpoint, mmap=True)))
    elif spec.pretrained is not None:
        config = _pretrained_config(spec)
    elif spec.architecture is None:
        raise ValueError("model.backbone: set either architecture (e.g. gpt2) or pretrained (a local directory).")
    else:
        try:
            config = AutoConfig.for_model(spec.architecture, **spec.config)
        except ValueError as exc:
            raise ValueError(f"model.backbone.architecture: {exc}") from None
    return max_positions(config)


def _pretrained_config(spec: Backbone) -> PretrainedConfig:
    """The config of the local pretrained directory ``spec.pretrained``, with the keys of ``spec.config`` that
    keep its architecture applied (`lmforge.core.source_config`)."""
    path = Path(spec.pretrained)
    if not path.is_dir():
        raise FileNotFoundError(
            f"model.backbone.pretrained: {spec.pretrained!r} is not a directory. Give a local HF model "
            "directory (lmforge does not download models), or make one with lmforge: `lmforge fit --config "
            f"quickstart`, then `lmforge export runs/quickstart/version_0/checkpoints/last.ckpt {spec.pretrained}` "
            "(a small GPT-2 pre-trained on the bundled corpus, about 2 minutes on 2 CPU cores)."
        )
    config = AutoConfig.from_pretrained(str(path), local_files_only=True, trust_remote_code=spec.trust_remote_code)
    return apply_overrides(config, spec.config, "model.backbone.pretrained", spec.pretrained)


def _saved_config(spec: Backbone, config: PretrainedConfig) -> PretrainedConfig:
    """A checkpoint's saved config with the keys of ``spec.config`` that keep its architecture applied."""
    return apply_overrides(config, spec.config, "model.backbone.checkpoint", spec.checkpoint)


def _token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
           "eos_token_id": tokenizer.eos_token_id}
    return {k: v for k, v in ids.items() if v is not None}


def build_config(spec: Backbone, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    """The HF config for ``spec``, with the tokenizer's vocabulary and ids."""
    if spec.init_from is not None:
        return _student_config(spec, tokenizer)
    if spec.checkpoint is not None:
        return _checkpoint_config(spec, tokenizer)
    if spec.pretrained is not None:
        config = _pretrained_config(spec)
        if len(tokenizer) > config.vocab_size:
            raise ValueError(
                f"model.backbone.pretrained: the tokenizer has {len(tokenizer)} tokens but the model at "
                f"{spec.pretrained} has vocab_size={config.vocab_size}. Use the model's own tokenizer "
                f"(data.tokenizer.path: {spec.pretrained})."
            )
        return config
    if spec.architecture is None:
        raise ValueError("model.backbone: set either architecture (e.g. gpt2) or pretrained (a local directory).")
    try:
        return AutoConfig.for_model(spec.architecture, **{**spec.config, "vocab_size": len(tokenizer),
                                                          **_token_ids(tokenizer)})
    except ValueError as exc:
        raise ValueError(f"model.backbone.architecture: {exc}") from None


def build_backbone(spec: Backbone, auto_model: str, config: PretrainedConfig) -> PreTrainedModel:
    """Instantiate the model with ``transformers.<auto_model>``, load its weights and freeze what ``spec`` asks."""
    auto = getattr(transformers, auto_model)
    kwargs: dict[str, Any] = {"trust_remote_code": spec.trust_remote_code}
    if spec.attn_implementation is not None:
        kwargs["attn_implementation"] = spec.attn_implementation
    if spec.pretrained is not None:
        model = auto.from_pretrained(spec.pretrained, config=config, local_files_only=True, **kwargs)
    else:
        model = auto.from_config(config, **kwargs)
    if spec.init_from is not None:
        _copy_teacher_weights(spec, auto_model, model)
    if spec.checkpoint is not None:
        check_start_checkpoint(spec, auto_model)
        _log_report(load_base_weights(model, spec.checkpoint), spec.checkpoint)
    freeze(model, spec.freeze_embeddings, spec.freeze_layers)
    if spec.lora is not None:
        add_lora(model, spec.lora, auto_model)
    skip_padding_check(model)
    return model


def add_lora(model: PreTrainedModel, spec: LoraSpec, auto_model: str) -> None:
    """Put ``spec``'s adapters into ``model`` (freezing the rest) and log how many parameters train.

    A classifier's new head trains in full (``modules_to_save``) unless the recipe names other modules; a
    causal LM's output layer never does by default (it is often tied to the input embeddings).
    """
    if spec.modules_to_save is None and TASK_TYPES.get(auto_model) not in (None, "CAUSAL_LM"):
        spec = dataclasses.replace(spec, modules_to_save=head_modules(model) or None)
    apply_lora(model, spec, auto_model)
    trainable, total = parameter_counts(model)
    log.info("%s: training %s of %s parameters (%.2f%%): LoRA r=%d on %s%s", LORA_RECIPE_KEY, f"{trainable:,}",
             f"{total:,}", 100.0 * trainable / total, spec.r, spec.target_modules or "peft's default layers",
             f", and in full {spec.modules_to_save}" if spec.modules_to_save else "")


def skip_padding_check(model: nn.Module) -> None:
    """Turn off transformers' per-forward look for padding in ``input_ids`` when no attention mask is given.

    It reads the ids on the host (``pad_token_id in input_ids[:, [-1, 0]]``) at every forward pass, so a GPU step
    waits for the device; lmforge passes an attention mask wherever it pads, and packed causal-LM blocks have no
    padding (documents are separated by EOS, which may share the pad token's id and trip the warning).
    """
    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            module.warn_if_padding_and_no_attention_mask = _no_padding_check


def _no_padding_check(*args: Any, **kwargs: Any) -> None:
    return None


# -- a student built from a teacher's layers (init_from) -----------------------------------------


def kept_layers(spec: Backbone, n_layers: int) -> list[int]:
    """The teacher blocks a student built with ``init_from`` keeps (default every other one)."""
    layers = list(range(0, n_layers, 2)) if spec.layers is None else list(spec.layers)
    bad = [i for i in layers if not 0 <= i < n_layers]
    if not layers or bad:
        raise ValueError(
            f"model.backbone.layers: must list block indices of {spec.init_from} (0 to {n_layers - 1}; it has "
            f"{n_layers} blocks), got {spec.layers}. Name at least one existing block, e.g. [0, 2]."
        )
    return layers


def _student_config(spec: Backbone, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    if spec.pretrained is not None:
        raise ValueError("model.backbone: set pretrained (a whole model) or init_from (some of its blocks), not both.")
    check_vocabulary(spec.init_from, tokenizer, INIT_KEY)
    teacher = trained_config(spec.init_from, INIT_KEY)
    layers = kept_layers(spec, teacher.num_hidden_layers)
    config = copy.deepcopy(teacher)
    config.update(spec.config)
    if config.num_hidden_layers != teacher.num_hidden_layers:
        raise ValueError(
            f"model.backbone.config: must not set the layer count when init_from is set, got "
            f"{config.num_hidden_layers} layers. The student's blocks are model.backbone.layers."
        )
    if len(tokenizer) > config.vocab_size:
        raise ValueError(
            f"{INIT_KEY}: {spec.init_from} has vocab_size={config.vocab_size} but the tokenizer has {len(tokenizer)} "
            "tokens. Use the model's own tokenizer (data.init_args.tokenizer.path)."
        )
    config.num_hidden_layers = len(layers)
    if isinstance(getattr(config, "layer_types", None), list):  # per-layer attention kinds (Qwen2, Gemma, ...)
        config.layer_types = [config.layer_types[i] for i in layers]
    return config


def block_list_name(model: nn.Module) -> str:
    """The qualified name of the model's stack of blocks (``transformer.h``, ``model.layers``,
    ``bert.encoder.layer``), found without knowing the architecture: the ``nn.ModuleList``
    with one entry per layer of the config; among several, the one whose entries are the
    block class the model names in ``_no_split_modules``."""
    n = model.config.num_hidden_layers
    found = [name for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n]
    if len(found) > 1:
        blocks = set(getattr(model, "_no_split_modules", None) or [])
        found = [name for name in found if type(model.get_submodule(name)[0]).__name__ in blocks]
    if len(found) != 1:
        raise ValueError(
            f"{INIT_KEY}: cannot tell which module list of {type(model).__name__} holds its {n} blocks "
            f"(candidates: {found or 'none'}). init_from needs a model with one stack of blocks (gpt2, llama, bert, ...)."
        )
    return found[0]


def _copy_teacher_weights(spec: Backbone, auto_model: str, student: PreTrainedModel) -> None:
    """Load the teacher's weights into ``student``: every tensor outside the block stack, and
    teacher block ``layers[i]`` into student block ``i``."""
    teacher = load_trained(spec.init_from, auto_model, INIT_KEY)
    layers = kept_layers(spec, teacher.config.num_hidden_layers)
    prefix = block_list_name(teacher) + "."
    state = {}
    for key, value in teacher.state_dict().items():
        if not key.startswith(prefix):
            state[key] = value
            continue
        index, rest = key[len(prefix):].split(".", 1)
        for i, kept in enumerate(layers):  # a block listed twice is copied twice
            if kept == int(index):
                state[f"{prefix}{i}.{rest}"] = value
    try:
        missing, unexpected = student.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ValueError(f"model.backbone.config: the student's shapes must match {spec.init_from}'s; {exc}") from None
    if missing or unexpected:
        raise ValueError(f"{INIT_KEY}: the student does not fit the weights of {spec.init_from} "
                         f"(missing {missing}, unexpected {unexpected}).")


# -- starting from an lmforge checkpoint ----------------------------------------------------------


def _checkpoint_config(spec: Backbone, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    from tokenizers import Tokenizer

    checkpoint = load_checkpoint(spec.checkpoint, mmap=True)
    saved = checkpoint[CKPT_KEY]
    vocab = Tokenizer.from_str(saved["tokenizer"]).get_vocab()
    if vocab != tokenizer.backend_tokenizer.get_vocab():
        raise ValueError(
            f"model.backbone.checkpoint: {spec.checkpoint} was trained with another tokenizer ({len(vocab)} tokens) "
            f"than data.tokenizer ({len(tokenizer)} tokens); set data.init_args.tokenizer.path to that run's "
            "tokenizer/ directory (runs/<name>/version_N/tokenizer)."
        )
    return _saved_config(spec, checkpoint_config(checkpoint))


def check_start_checkpoint(spec: Backbone, auto_model: str) -> None:
    """Refuse ``model.backbone.checkpoint`` when its language-modelling task is not the objective's.

    A masked LM's encoder (BERT) started as a causal LM would be run as a decoder (``BertLMHeadModel``), and a
    causal LM's as a masked LM the other way round: neither is what the checkpoint learned. A checkpoint of
    either starts a classifier or tagger (a new head), which is what ``checkpoint`` is for.
    """
    if spec.checkpoint is None or auto_model not in LM_AUTO_MODELS or not Path(spec.checkpoint).is_file():
        return
    saved = load_checkpoint(spec.checkpoint, mmap=True, key="model.backbone.checkpoint")[CKPT_KEY]
    if saved.get("auto_model") in LM_AUTO_MODELS:
        check_checkpoint_fits(
            saved, auto_model, None, "model.objective",
            prefix=f"model.backbone.checkpoint: {spec.checkpoint}: ",
            fix="A language model continues only with the objective it was trained with; use a checkpoint of "
                "this objective, or train one.",
        )


def load_base_weights(model: PreTrainedModel, checkpoint_path: str | Path) -> LoadReport:
    """Load the base-model weights of an lmforge checkpoint into ``model``; its head stays as initialised.

    Parameters are matched by name under the base-model prefix (``bert.``,
    ``transformer.``, ``model.``), so a masked- or causal-LM checkpoint starts a
    sequence or token classifier of the same architecture.
    """
    state = backbone_state_dict(load_checkpoint(checkpoint_path))
    prefix = model.base_model_prefix + "."
    base = model.base_model
    if base is model:  # a bare base model (AutoModel): the checkpoint's head is all there is to drop
        raise ValueError(f"model.backbone.checkpoint: {type(model).__name__} has no head; use an objective whose "
                         "auto_model adds one.")
    base_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not base_state:
        raise ValueError(
            f"model.backbone.checkpoint: {checkpoint_path} holds no weights under {prefix!r}, the base model of "
            f"{type(model).__name__}; its weights start with {sorted({k.split('.')[0] for k in state})}. "
            "Start from a checkpoint of the same architecture."
        )
    try:
        missing, unexpected = base.load_state_dict(base_state, strict=False)
    except RuntimeError as exc:  # shape mismatches are raised even with strict=False
        raise ValueError(
            f"model.backbone.checkpoint: {checkpoint_path} does not fit this backbone: {exc}. Keep the size "
            "settings of model.backbone.config as they were in pre-training."
        ) from None
    head = [k for k in model.state_dict() if not k.startswith(prefix)]
    return LoadReport(loaded=sorted(set(base_state) - set(unexpected)), missing=sorted(missing),
                      unexpected=sorted(unexpected), dropped=sorted(k for k in state if not k.startswith(prefix)),
                      new_head=sorted(head))


def _log_report(report: LoadReport, path: str) -> None:
    log.info("model.backbone.checkpoint: loaded %d base-model tensors from %s; new head: %s; dropped from the "
             "checkpoint: %s", len(report.loaded), path, ", ".join(report.new_head) or "none",
             ", ".join(report.dropped) or "none")
    if report.missing:
        log.warning("model.backbone.checkpoint: %s lacks these base-model weights, newly initialised: %s",
                    path, ", ".join(report.missing))
    if report.unexpected:
        log.warning("model.backbone.checkpoint: %s has base-model weights this model does not use: %s",
                    path, ", ".join(report.unexpected))


# -- freezing ----------------------------------------------------------------------------------------


def transformer_blocks(model: PreTrainedModel) -> nn.ModuleList:
    """The base model's list of transformer blocks (the ModuleList as long as ``num_hidden_layers``)."""
    n = getattr(model.config, "num_hidden_layers", None)
    found = [m for m in model.base_model.modules() if isinstance(m, nn.ModuleList) and len(m) == n]
    if len(found) != 1:
        raise ValueError(f"model.backbone.freeze_layers: cannot tell the {n} transformer blocks of "
                         f"{type(model.base_model).__name__} apart ({len(found)} candidate lists).")
    return found[0]


def freeze(model: PreTrainedModel, embeddings: bool, layers: int) -> None:
    """Turn off gradients of the embeddings (base-model parameters before the first block) and of the
    first ``layers`` blocks."""
    if not embeddings and layers == 0:
        return
    blocks = transformer_blocks(model)
    if layers > len(blocks):
        raise ValueError(f"model.backbone.freeze_layers={layers} exceeds the model's {len(blocks)} blocks.")
    if embeddings:
        in_blocks = {id(p) for p in blocks.parameters()}
        for p in model.base_model.parameters():
            if id(p) in in_blocks:
                break
            p.requires_grad_(False)
    for block in blocks[:layers]:
        block.requires_grad_(False)
