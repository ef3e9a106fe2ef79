"""Every registered bias mitigator, built with its defaults: documents its source, keeps text changes on the
training split, trains one step of a tiny GPT-2 with a finite loss, and its state survives a save and load."""

from __future__ import annotations

import inspect
import io
import math
import re
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer

from lmforge.core.backbone import Backbone
from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining
from lmforge.core.module import LanguageModel
from lmforge.core.plugins import BiasMitigator, overrides
from lmforge.core.registry import registry
from lmforge.plugins.objectives.causal_lm import CausalLM

NAMES = registry().names("bias_mitigator")
TINY_GPT2 = Backbone(architecture="gpt2", config={"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64})


def test_the_four_built_ins_are_registered() -> None:
    assert {"CounterfactualAugmentation", "BalancedSampling", "BlocklistFilter", "AdversarialDebiasing"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_mitigator_contract(name: str, corpus: dict[str, Path], tmp_path: Path) -> None:
    cls = registry().get("bias_mitigator", name).cls
    plugin = cls()
    assert isinstance(plugin, BiasMitigator) and plugin.kind == "bias_mitigator"
    assert (cls.__doc__ or "").strip(), f"{name} needs a docstring (its first line is shown by `lmforge plugins`)"
    assert re.search(r"\b(19|20)\d\d\b", sys.modules[cls.__module__].__doc__ or ""), "module docstring cites its source"
    for parameter in inspect.signature(cls).parameters.values():
        assert parameter.annotation is not inspect.Parameter.empty, f"{name}.{parameter.name} needs a type"
    if overrides(plugin, "process_text"):
        assert plugin.splits == ("train",)

    model = LanguageModel(TINY_GPT2, CausalLM(), bias_mitigators=[plugin])
    data = TextData(train=str(corpus["train"]), val=str(corpus["val"]), block_size=32, batch_size=4, seed=0,
                    tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=300)), cache_dir=str(tmp_path / "c"))
    trainer = Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    assert math.isfinite(float(trainer.callback_metrics["loss/total"]))
    buffer = io.BytesIO()
    torch.save(plugin.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = cls()
    fresh.setup(model)
    fresh.load_state_dict(state)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())
