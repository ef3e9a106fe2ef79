"""The contract every registered regularizer and augmenter keeps.

For each plugin of those kinds in the registry (built-in or third-party), built
with its defaults: one training step of a tiny GPT-2 gives a finite loss and
finite gradients, and the plugin's ``state_dict`` survives a save and load
into a fresh instance.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer

from lmforge.core.backbone import Backbone
from lmforge.core.data import TextData
from lmforge.core.module import LanguageModel
from lmforge.core.registry import registry
from lmforge.core.tokenizer import TokenizerSpec, TokenizerTraining
from lmforge.plugins.objectives.causal_lm import CausalLM

#: The LanguageModel argument that holds each kind.
KIND_ARGUMENT = {"regularizer": "regularizers", "augmenter": "augmenters"}
CASES = [(kind, name) for kind in KIND_ARGUMENT for name in registry().names(kind)]
TINY_GPT2 = Backbone(architecture="gpt2", config={"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64})


class StepCheck(Callback):
    """Records the training loss and whether the gradients after backward are finite."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.grads_finite: list[bool] = []
        self.grad_count = 0

    def on_after_backward(self, trainer: Trainer, pl_module: LanguageModel) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.grad_count = len(grads)
        self.grads_finite.append(all(bool(torch.isfinite(g).all()) for g in grads))

    def on_train_batch_end(self, trainer: Trainer, pl_module: LanguageModel, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


@pytest.mark.parametrize(("kind", "name"), CASES, ids=[name for _, name in CASES])
def test_plugin_contract(kind: str, name: str, corpus: dict[str, Path], tmp_path: Path) -> None:
    cls = registry().get(kind, name).cls
    plugin = cls()
    model = LanguageModel(TINY_GPT2, CausalLM(), **{KIND_ARGUMENT[kind]: [plugin]})
    data = TextData(train=str(corpus["train"]), val=str(corpus["val"]), block_size=32, batch_size=4, seed=0,
                    tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=300)), cache_dir=str(tmp_path / "cache"))
    check = StepCheck()
    trainer = Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                      num_sanity_val_steps=0, callbacks=[check], default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=data)

    assert len(check.losses) == 1 and math.isfinite(check.losses[0])
    assert check.grads_finite == [True] and check.grad_count > 0

    buffer = io.BytesIO()
    torch.save(plugin.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = cls()
    fresh.setup(model)
    fresh.load_state_dict(state)
    restored = fresh.state_dict()
    assert restored.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(restored[key], value) if isinstance(value, torch.Tensor) else restored[key] == value, key
