"""The backbone: an HF ``transformers`` model, built from a config or loaded
from a local pretrained directory. Nothing is downloaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import transformers
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

#: Config keys under which architectures store their maximum sequence length.
POSITION_KEYS = ("n_positions", "max_position_embeddings", "n_ctx", "seq_length")


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
    """

    architecture: str | None = "gpt2"
    config: dict[str, Any] = field(default_factory=dict)
    pretrained: str | None = None
    trust_remote_code: bool = False
    attn_implementation: str | None = "sdpa"


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
    return auto.from_config(config, **kwargs)
