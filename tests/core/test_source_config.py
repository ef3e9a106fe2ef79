"""A pretrained directory or a checkpoint is the source of the architecture (`lmforge.core.source_config`): the
recipe's from-scratch sizes are ignored with a warning that names them; dropout-style keys still apply."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from hf_dirs import save_gpt2_dir
from transformers import GPT2Config, GPT2LMHeadModel

from lmforge.core.backbone import Backbone, build_backbone, build_config, position_limit
from lmforge.core.data.tokenizer import load_tokenizer
from lmforge.core.source_config import architecture_keys

#: What a recipe sets for a from-scratch model (quickstart's sizes), and a dropout rate.
RECIPE_SIZES = {"n_layer": 2, "n_embd": 128, "n_head": 4, "n_positions": 128}


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_gpt2_dir(tmp_path_factory.mktemp("hf-gpt2"))


def test_architecture_keys_are_sizes_counts_and_positions_not_dropout() -> None:
    config = GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=32)
    overrides = {**RECIPE_SIZES, "resid_pdrop": 0.3, "layer_norm_epsilon": 1e-6}
    assert sorted(architecture_keys(config, overrides)) == sorted(RECIPE_SIZES)
    # The same value the model has is no change; a key found only through the parameter shapes counts too.
    assert architecture_keys(config, {"n_embd": 16}) == []
    assert architecture_keys(config, {"hidden_size": 64}) == ["hidden_size"]  # GPT-2's alias of n_embd
    assert architecture_keys(config, {"n_inner": 48}) == ["n_inner"]


def test_pretrained_directory_keeps_its_sizes_and_takes_dropout(gpt2_dir: Path, caplog) -> None:
    spec = Backbone(pretrained=str(gpt2_dir), config={**RECIPE_SIZES, "resid_pdrop": 0.25})
    tokenizer = load_tokenizer(gpt2_dir)
    with caplog.at_level(logging.WARNING):
        config = build_config(spec, tokenizer)
    assert (config.n_layer, config.n_embd, config.n_head, config.n_positions) == (1, 16, 2, 32)
    assert config.resid_pdrop == 0.25
    assert position_limit(spec) == 32  # the data checks see the model's own positions
    warned = "\n".join(r.getMessage() for r in caplog.records)
    for key in RECIPE_SIZES:
        assert key in warned
    assert "model.backbone.pretrained" in warned and "resid_pdrop" not in warned.split("ignoring")[1].split(":")[0]
    model = build_backbone(spec, "AutoModelForCausalLM", config)  # no size mismatch
    reference = GPT2LMHeadModel.from_pretrained(gpt2_dir)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
