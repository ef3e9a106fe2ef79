"""Exact resume: stop mid-epoch, resume from last.ckpt, and land on the uninterrupted run's weights and losses.

The run crosses an epoch boundary after the interruption and uses every kind of state a resume must
restore: the weights and AdamW moments, a plugin parameter (``LearnedScale``), the step generator
(``TokenNoise``), dropout (the global generator), the text-stage augmenter (``RandomSwap``, seeded by
document) and the position in the shuffled epoch.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from lmforge.core.backbone import Backbone
from lmforge.core.data.base import ResumableSampler
from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining
from lmforge.core.module import LanguageModel
from lmforge.core.plugins import Regularizer
from lmforge.plugins.augmenters.random_swap import RandomSwap
from lmforge.plugins.augmenters.token_noise import TokenNoise
from lmforge.plugins.objectives.causal_lm import CausalLM
from lmforge.runtime.preemption import SaveOnPreemption

TINY = Backbone(architecture="gpt2", config={"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 16})
STEPS, STOP = 12, 5


class LearnedScale(Regularizer):
    """A plugin parameter: penalises (scale * mean logit)^2, so the scale is trained."""

    def setup(self, module: LanguageModel) -> None:
        self.scale = nn.Parameter(torch.ones(()))

    def loss(self, ctx):
        return (self.scale * ctx.outputs.logits.mean()) ** 2


class Losses(Callback):
    def __init__(self) -> None:
        self.by_step: dict[int, float] = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.by_step[trainer.global_step] = float(outputs["loss"])


class SigtermAt(Callback):
    """Sends this process SIGTERM after training step ``step``, as a cluster's preemption would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def run(tmp_path: Path, corpus: Path, max_steps: int, ckpt_path: str | None = None,
        sigterm_at: int | None = None) -> tuple[LanguageModel, Losses]:
    seed_everything(7)
    tokenizer = TokenizerSpec(train=TokenizerTraining(vocab_size=300))
    data = TextData(train=str(corpus), val=str(corpus), tokenizer=tokenizer, block_size=16, batch_size=4,
                    cache_dir=str(tmp_path / "cache"), seed=0)
    model = LanguageModel(TINY, CausalLM(), regularizers=[LearnedScale()],
                          augmenters=[RandomSwap(alpha=0.2), TokenNoise(replace_probability=0.1)])
    losses = Losses()
    # Checkpoints every step stand for a hard kill right after one; with SIGTERM only SaveOnPreemption saves.
    every = None if sigterm_at else 1
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=every, save_top_k=0)
    callbacks = [losses, checkpoints, SaveOnPreemption()] + ([SigtermAt(sigterm_at)] if sigterm_at else [])
    trainer = Trainer(max_steps=max_steps, accelerator="cpu", logger=False, callbacks=callbacks,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                      num_sanity_val_steps=0)
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    return model, losses


@pytest.mark.slow
def test_resume_mid_epoch_matches_the_uninterrupted_run(tmp_path: Path, write_corpus) -> None:
    corpus = write_corpus(tmp_path / "train.txt", 7, seed=3)
    full, full_losses = run(tmp_path / "full", corpus, STEPS)
    batches_per_epoch = len(full.trainer.train_dataloader)
    assert STOP < batches_per_epoch < STEPS  # the interruption is mid-epoch, and the resumed run crosses an epoch

    run(tmp_path / "killed", corpus, STOP)  # a hard kill after step STOP: last.ckpt is the one from that step
    with pytest.raises(SystemExit):  # SIGTERM: Lightning finishes the batch and exits; SaveOnPreemption saves
        run(tmp_path / "preempted", corpus, STEPS, sigterm_at=STOP)
    for cut in ("killed", "preempted"):
        ckpt = tmp_path / cut / "ckpt" / "last.ckpt"
        assert torch.load(ckpt, weights_only=False)["global_step"] == STOP
        resumed, resumed_losses = run(tmp_path / cut, corpus, STEPS, ckpt_path=str(ckpt))
        assert sorted(resumed_losses.by_step) == list(range(STOP + 1, STEPS + 1))
        for step, loss in resumed_losses.by_step.items():
            assert loss == full_losses.by_step[step], (cut, step)  # bitwise: same data, draws and arithmetic
        full_state, resumed_state = full.state_dict(), resumed.state_dict()
        assert full_state.keys() == resumed_state.keys()
        for name in full_state:
            assert torch.equal(full_state[name], resumed_state[name]), (cut, name)
        assert resumed.regularizers[0].scale.item() != 1.0  # the plugin parameter was trained and restored


def test_sampler_splits_each_epoch_over_ranks_and_resumes() -> None:
    samplers = [ResumableSampler(22, batch_size=2, seed=1, rank=r, world_size=2) for r in range(2)]
    for epoch in range(2):
        orders = []
        for sampler in samplers:
            sampler.set_epoch(epoch)
            orders.append(list(sampler))
        assert len(orders[0]) == len(orders[1]) == 11
        assert sorted(orders[0] + orders[1]) == list(range(22))  # each example once per epoch
    assert samplers[0].order(0) != samplers[0].order(1)  # a new shuffle each epoch
    sampler = samplers[1]
    sampler.set_epoch(1)
    sampler.skip_batches = 3
    assert list(sampler) == sampler.order(1)[6:]
    assert list(sampler) == sampler.order(1)  # the skip applies to the resumed epoch only
