"""A given model is the source of the architecture: which ``model.backbone.config`` keys still apply to it.

A recipe's ``model.backbone.config`` sizes a model built from scratch. When the run starts from a local HF
directory (``model.backbone.pretrained``) or an lmforge checkpoint (``model.backbone.checkpoint``), that
model's own config fixes the architecture, so the keys that would change it (sizes, layer and head counts,
vocabulary, positions: what its weights were trained with) are ignored, with a warning that names them.
Every other key (dropout rates, ``classifier_dropout``, ``use_cache``, ...) is applied on top.

Ignored rather than refused: the bundled recipes carry from-scratch sizes, and the documented way to
fine-tune is the recipe plus ``--model.backbone.pretrained DIR``; refusing would make every such run also
clear ``model.backbone.config``.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from transformers import PretrainedConfig

log = logging.getLogger(__name__)

#: Config keys that fix a model's architecture, under the names of the common HF configs (GPT-2's included).
ARCHITECTURE_KEYS = frozenset({
    "model_type", "architectures", "vocab_size", "type_vocab_size", "hidden_size", "n_embd", "d_model",
    "embedding_size", "num_hidden_layers", "n_layer", "num_layers", "num_attention_heads", "n_head",
    "num_key_value_heads", "head_dim", "intermediate_size", "n_inner", "ffn_dim", "max_position_embeddings",
    "n_positions", "n_ctx", "seq_length", "tie_word_embeddings", "hidden_act", "activation_function",
    "position_embedding_type", "layer_types",
})

_warned: set[tuple[str, str, tuple[str, ...]]] = set()


def architecture_keys(config: PretrainedConfig, overrides: dict[str, Any]) -> list[str]:
    """The keys of ``overrides`` that would change the architecture of a model with ``config``: named in
    `ARCHITECTURE_KEYS` (directly or through the config's ``attribute_map``), or changing the shape of a
    parameter of the base model built on the meta device. Keys set to the value ``config`` has are not counted."""
    changed = {k: v for k, v in overrides.items() if getattr(config, k, object()) != v}
    aliases = {**{v: k for k, v in config.attribute_map.items()}, **config.attribute_map}
    named = [k for k in changed if k in ARCHITECTURE_KEYS or aliases.get(k) in ARCHITECTURE_KEYS]
    rest = [k for k in changed if k not in named]
    if not rest:
        return named
    shapes = _parameter_shapes(config)
    if shapes is None:
        return named
    return named + [k for k in rest if _parameter_shapes(_with(config, {k: changed[k]})) not in (shapes, None)]


def apply_overrides(config: PretrainedConfig, overrides: dict[str, Any], key: str, source: str) -> PretrainedConfig:
    """``config`` (the given model's) with the keys of ``overrides`` that keep its architecture; a warning names
    the others.

    Args:
        key: The recipe key that named the model (``model.backbone.pretrained``).
        source: Its value (the directory or checkpoint path), for the warning.
    """
    ignored = architecture_keys(config, overrides)
    if ignored:
        _warn_once(config, overrides, ignored, key, source)
    return _with(config, {k: v for k, v in overrides.items() if k not in ignored})


def _warn_once(config: PretrainedConfig, overrides: dict[str, Any], ignored: list[str], key: str, source: str) -> None:
    marker = (key, str(source), tuple(ignored))
    if marker in _warned:  # the config is read twice: to check the data settings, then to build the model
        return
    _warned.add(marker)
    theirs = ", ".join(f"{k}={getattr(config, k, None)!r}" for k in ignored)
    asked = ", ".join(f"{k}={overrides[k]!r}" for k in ignored)
    log.warning(
        "model.backbone.config: ignoring %s: %s (%s) fixes the architecture, and its config has %s. The other keys "
        "of model.backbone.config (dropout rates, ...) still apply; a from-scratch model takes the sizes.",
        asked, key, source, theirs,
    )


def _with(config: PretrainedConfig, overrides: dict[str, Any]) -> PretrainedConfig:
    config = copy.deepcopy(config)
    config.update(overrides)
    return config


def _parameter_shapes(config: PretrainedConfig) -> dict[str, tuple[int, ...]] | None:
    """Parameter name -> shape of the base model ``config`` builds, on the meta device (no memory, no compute);
    None when it cannot be built so."""
    import torch
    from transformers import AutoModel

    try:
        with torch.device("meta"):
            model = AutoModel.from_config(config)
    except Exception:  # an architecture AutoModel does not know, or a config it refuses: fall back to the names
        return None
    return {name: tuple(p.shape) for name, p in model.named_parameters()}
