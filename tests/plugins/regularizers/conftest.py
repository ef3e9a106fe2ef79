"""Tiny models with a trained tokenizer, built without a Trainer (``configure_model`` runs the plugins' setup)."""

from __future__ import annotations

import functools
import random
from typing import Any

import pytest

from lmforge.core.backbone import Backbone
from lmforge.core.data.tokenizer import TokenizerTraining, train_tokenizer
from lmforge.core.module import LanguageModel
from lmforge.plugins.objectives.causal_lm import CausalLM
from lmforge.plugins.objectives.masked_lm import MaskedLM

TINY = {
    "gpt2": {"n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 64},
    "llama": {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2, "num_key_value_heads": 2,
              "intermediate_size": 64, "max_position_embeddings": 64},
    "bert": {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64,
             "max_position_embeddings": 64},
}


@functools.cache
def _tokenizer(algorithm: str) -> Any:
    rng = random.Random(0)
    words = "the cat sat on a mat and a dog ran to the park while birds sang in tall green trees".split()
    texts = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(200)]
    return train_tokenizer(texts, TokenizerTraining(vocab_size=300), algorithm)


@pytest.fixture
def make_model():
    """``make_model("gpt2", regularizers=[...])``: a built LanguageModel (CausalLM; MaskedLM for bert)."""

    def build(architecture: str, attn_implementation: str = "sdpa", **plugins: Any) -> LanguageModel:
        objective = MaskedLM() if architecture == "bert" else CausalLM()
        algorithm = "wordpiece" if architecture == "bert" else "bpe"
        spec = Backbone(architecture=architecture, config=dict(TINY[architecture]),
                        attn_implementation=attn_implementation)
        model = LanguageModel(spec, objective, **plugins)
        model.tokenizer = _tokenizer(algorithm)
        model.configure_model()
        return model

    return build
