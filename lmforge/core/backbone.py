"""The backbone: an HF ``transformers`` model, built from a config, loaded
from a local pretrained directory, or built from a subset of a trained
model's layers (DistilBERT's student initialization). Nothing is downloaded."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import transformers
from torch import nn
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

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
            always come from the tokenizer.
        pretrained: A local directory with a pretrained model
            (``from_pretrained``); replaces ``architecture``.
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
    """

    architecture: str | None = "gpt2"
    config: dict[str, Any] = field(default_factory=dict)
    pretrained: str | None = None
    trust_remote_code: bool = False
    attn_implementation: str | None = "sdpa"
    init_from: str | None = None
    layers: list[int] | None = None


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
    if spec.pretrained is not None:
        path = Path(spec.pretrained)
        if not path.is_dir():
            raise FileNotFoundError(
                f"model.backbone.pretrained: {spec.pretrained!r} is not a directory. Give a local HF model "
                "directory (lmforge does not download models)."
            )
        config = AutoConfig.from_pretrained(str(path), local_files_only=True,
                                            trust_remote_code=spec.trust_remote_code, **spec.config)
    elif spec.architecture is None:
        raise ValueError("model.backbone: set either architecture (e.g. gpt2) or pretrained (a local directory).")
    else:
        try:
            config = AutoConfig.for_model(spec.architecture, **spec.config)
        except ValueError as exc:
            raise ValueError(f"model.backbone.architecture: {exc}") from None
    return max_positions(config)


def _token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
           "eos_token_id": tokenizer.eos_token_id}
    return {k: v for k, v in ids.items() if v is not None}


def build_config(spec: Backbone, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    """The HF config for ``spec``, with the tokenizer's vocabulary and ids."""
    if spec.init_from is not None:
        return _student_config(spec, tokenizer)
    if spec.pretrained is not None:
        path = Path(spec.pretrained)
        if not path.is_dir():
            raise FileNotFoundError(
                f"model.backbone.pretrained: {spec.pretrained!r} is not a directory. Give a local HF model "
                "directory (lmforge does not download models)."
            )
        config = AutoConfig.from_pretrained(str(path), local_files_only=True,
                                            trust_remote_code=spec.trust_remote_code, **spec.config)
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
    """Instantiate the model with ``transformers.<auto_model>``."""
    auto = getattr(transformers, auto_model)
    kwargs: dict[str, Any] = {"trust_remote_code": spec.trust_remote_code}
    if spec.attn_implementation is not None:
        kwargs["attn_implementation"] = spec.attn_implementation
    if spec.pretrained is not None:
        return auto.from_pretrained(spec.pretrained, config=config, local_files_only=True, **kwargs)
    model = auto.from_config(config, **kwargs)
    if spec.init_from is not None:
        _copy_teacher_weights(spec, auto_model, model)
    return model


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
    # Imported here: pretrained.py imports module.py, which imports this file.
    from lmforge.core.pretrained import check_vocabulary, trained_config

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
    from lmforge.core.pretrained import load_trained

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
