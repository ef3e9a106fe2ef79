"""Dropout (Srivastava et al. 2014) of the backbone, set from the recipe.

HF models build their ``nn.Dropout`` modules (and attention modules that keep
the attention dropout as a float, like Llama's) when the model is built, from
the config's probabilities; changing the config afterwards changes nothing.
So `Dropout` sets both: the config keys (so that checkpoints and exported
models carry the new values) and every module attribute that each key was
copied into. Which attributes those are is found, for any architecture, by
building the same architecture on the meta device (no memory, no weights) with
a distinct marker probability per key and looking for the markers.

Each role maps to the first of its candidate config keys that the
architecture's config has:

==========  ==============================================================  ==============================
role        candidate keys, in order                                        gpt2 / llama / bert
==========  ==============================================================  ==============================
hidden      resid_pdrop, hidden_dropout_prob, hidden_dropout,               resid_pdrop / none /
            resid_dropout, dropout, dropout_rate                            hidden_dropout_prob
attention   attn_pdrop, attention_probs_dropout_prob, attention_dropout,    attn_pdrop / attention_dropout /
            attn_dropout                                                    attention_probs_dropout_prob
embedding   embd_pdrop, embed_dropout, embedding_dropout                    embd_pdrop / none / none
==========  ==============================================================  ==============================

Llama (and Mistral, Qwen2) has no hidden or embedding dropout, only attention
dropout; BERT's embedding dropout is its hidden dropout
(``hidden_dropout_prob``). Setting a role the architecture does not have is
refused; ``config_keys`` names the key for an architecture the candidates miss.
"""

from __future__ import annotations

import copy
import logging
from typing import Literal

import torch
from torch import nn

from lmforge.core.plugins import Host, Regularizer

log = logging.getLogger(__name__)

Role = Literal["hidden", "attention", "embedding"]
CANDIDATE_KEYS: dict[str, tuple[str, ...]] = {
    "hidden": ("resid_pdrop", "hidden_dropout_prob", "hidden_dropout", "resid_dropout", "dropout", "dropout_rate"),
    "attention": ("attn_pdrop", "attention_probs_dropout_prob", "attention_dropout", "attn_dropout"),
    "embedding": ("embd_pdrop", "embed_dropout", "embedding_dropout"),
}
#: Marker probabilities for the meta-device probe; unlikely to be anyone's real setting.
_MARKER = 0.0123456789
_MARKER_STEP = 1e-7


def find_dropout_sites(model: nn.Module, keys: list[str]) -> dict[str, list[tuple[str, str]]]:
    """For each config key, the (module path, attribute) pairs its value was copied into at build time.

    Builds ``type(model)`` from a copy of ``model.config`` on the meta device with
    a distinct marker value per key, and finds every float attribute of every
    module (``nn.Dropout.p``, ``LlamaAttention.attention_dropout``, ...) that
    holds a marker. Module paths are the same in ``model``, built from the same
    config.
    """
    config = copy.deepcopy(model.config)
    markers = {}
    for i, key in enumerate(keys):
        value = _MARKER + i * _MARKER_STEP
        setattr(config, key, value)
        markers[value] = key
    try:
        with torch.device("meta"):
            probe = type(model)(config)
    except Exception as exc:  # arbitrary model code runs here
        raise RuntimeError(
            f"Dropout: could not build {type(model).__name__} on the meta device to find its dropout modules "
            f"({type(exc).__name__}: {exc})."
        ) from exc
    sites: dict[str, list[tuple[str, str]]] = {key: [] for key in keys}
    for path, module in probe.named_modules():
        for attribute, value in vars(module).items():
            if type(value) is float and value in markers:
                sites[markers[value]].append((path, attribute))
    return sites


def resolve_keys(config: object, roles: list[str], config_keys: dict[str, str]) -> dict[str, str]:
    """Role -> config key for ``roles``; refuses a role the architecture does not have."""
    present = set(config.to_dict())
    found = {}
    for role in roles:
        if role in config_keys:
            key = config_keys[role]
            if key not in present:
                raise ValueError(
                    f"Dropout: config_keys.{role} names {key!r}, which the {config.model_type!r} config does "
                    f"not have. Its dropout keys: {sorted(k for k in present if 'drop' in k)}."
                )
            found[role] = key
            continue
        key = next((k for k in CANDIDATE_KEYS[role] if k in present), None)
        if key is None:
            raise ValueError(
                f"Dropout: {role} dropout cannot be set for architecture {config.model_type!r}: its config has "
                f"none of the keys {', '.join(CANDIDATE_KEYS[role])}. Set {role}: null, or name the key with "
                f"config_keys: {{{role}: <key>}} (its dropout keys: "
                f"{sorted(k for k in present if 'drop' in k) or 'none'})."
            )
        found[role] = key
    return found


class Dropout(Regularizer):
    """Sets the backbone's hidden, attention and embedding dropout, whatever the architecture calls them.

    Args:
        hidden: Dropout on the residual stream / hidden states (GPT-2
            ``resid_pdrop``, BERT ``hidden_dropout_prob``); None keeps the
            backbone's value.
        attention: Dropout on the attention probabilities (GPT-2
            ``attn_pdrop``, Llama ``attention_dropout``, BERT
            ``attention_probs_dropout_prob``); None keeps the backbone's value.
        embedding: Dropout on the embeddings (GPT-2 ``embd_pdrop``); None
            keeps the backbone's value.
        config_keys: Role (``hidden``, ``attention``, ``embedding``) -> config
            key, for an architecture whose keys the built-in candidates miss.
    """

    def __init__(self, hidden: float | None = None, attention: float | None = None,
                 embedding: float | None = None, config_keys: dict[Role, str] | None = None) -> None:
        super().__init__()
        for role, value in (("hidden", hidden), ("attention", attention), ("embedding", embedding)):
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"Dropout: {role} must be in [0, 1) or null, got {value}.")
        unknown = sorted(set(config_keys or {}) - set(CANDIDATE_KEYS))
        if unknown:
            raise ValueError(f"Dropout: config_keys has unknown role(s) {unknown}; roles are {sorted(CANDIDATE_KEYS)}.")
        self.hidden = hidden
        self.attention = attention
        self.embedding = embedding
        self.config_keys = dict(config_keys or {})
        #: Config key -> probability, as applied in `setup`.
        self.applied: dict[str, float] = {}

    def probabilities(self) -> dict[str, float]:
        """The roles this plugin sets and their probabilities."""
        roles = {"hidden": self.hidden, "attention": self.attention, "embedding": self.embedding}
        return {role: p for role, p in roles.items() if p is not None}

    def setup(self, model: Host) -> None:
        requested = self.probabilities()
        if not requested:
            log.warning("Dropout: hidden, attention and embedding are all null; the backbone keeps its dropout.")
            return
        backbone = model.backbone
        keys = resolve_keys(backbone.config, list(requested), self.config_keys)
        shared = sorted({k for k in keys.values() if list(keys.values()).count(k) > 1})
        if shared:
            raise ValueError(
                f"Dropout: roles {sorted(r for r, k in keys.items() if k in shared)} all map to config key(s) "
                f"{shared} of {backbone.config.model_type!r}; set only one of them."
            )
        sites = find_dropout_sites(backbone, list(keys.values()))
        for role, p in requested.items():
            key = keys[role]
            setattr(backbone.config, key, p)
            for path, attribute in sites[key]:
                setattr(backbone.get_submodule(path), attribute, p)
            if not sites[key]:
                log.warning("Dropout: no module of %s copied config.%s at build time; %s dropout takes effect "
                            "only if the model reads the config during the forward pass.",
                            type(backbone).__name__, key, role)
            self.applied[key] = p
        log.info("Dropout: set %s", ", ".join(f"{k}={v}" for k, v in self.applied.items()))
