"""The device-side non-finite guard (lmforge/core/nonfinite.py) between two reads, and the per-step check.

With a fused AdamW, a NaN loss at a step that neither logs nor checkpoints is only read at the end of fit:
the update of that step (``stop``: and of every later step) must still not happen, the optimizer's step count
must not count it, and the message must name the first bad step and its term. An optimizer that cannot skip
on the device keeps the per-step host check and stops at the bad step itself.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from host_plugins import NanRegularizer
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback
from tiny import TINY_GPT2, text_data, write_corpus

from lmforge.core.module import LanguageModel, NonFiniteLossError

BAD_STEP = 2


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("guard")
    write_corpus(root / "train.txt", 150, seed=1)
    write_corpus(root / "val.txt", 20, seed=2)
    return root


class Snapshots(Callback):
    """The weights after each optimizer step, by global step."""

    def __init__(self) -> None:
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.weights[trainer.global_step] = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def _causal_lm():
    from lmforge.plugins.objectives.causal_lm import CausalLM

    return CausalLM()


def test_stop_keeps_the_weights_of_the_bad_step(corpus_dir: Path, tmp_path: Path) -> None:
    snapshots = Snapshots()
    optimizer = {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-2, "fused": True}}
    model = LanguageModel(TINY_GPT2, objective=_causal_lm(), optimizer=optimizer,
                          regularizers=[NanRegularizer(BAD_STEP, once=True)])
    trainer = Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False, callbacks=[snapshots],
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                      num_sanity_val_steps=0, gradient_clip_val=1.0, log_every_n_steps=50)
    with pytest.raises(NonFiniteLossError):
        trainer.fit(model, datamodule=text_data({"train": corpus_dir / "train.txt", "val": corpus_dir / "val.txt"},
                                                corpus_dir / "cache"))
    assert trainer.global_step == 6  # read at the end of fit: the steps ran, but none of them updated
    before = snapshots.weights[BAD_STEP]
    assert not torch.equal(before["backbone.transformer.wte.weight"], snapshots.weights[1]["backbone.transformer.wte.weight"])
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    state = trainer.optimizers[0].state
    assert {float(s["step"]) for s in state.values()} == {float(BAD_STEP)}


def test_skip_between_reads_skips_one_update_and_its_step_count(corpus_dir: Path, tmp_path: Path, caplog) -> None:
    snapshots = Snapshots()
    optimizer = {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-2, "fused": True}}
    model = LanguageModel(TINY_GPT2, objective=_causal_lm(), optimizer=optimizer, on_nonfinite_loss="skip",
                          max_nonfinite_skips=3, regularizers=[NanRegularizer(BAD_STEP, once=True)])
    trainer = Trainer(max_steps=5, accelerator="cpu", logger=False, enable_checkpointing=False, callbacks=[snapshots],
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                      num_sanity_val_steps=0, gradient_clip_val=1.0, log_every_n_steps=50)
    with caplog.at_level(logging.WARNING, logger="lmforge.core.module"):
        trainer.fit(model, datamodule=text_data({"train": corpus_dir / "train.txt", "val": corpus_dir / "val.txt"},
                                                corpus_dir / "cache"))
    assert trainer.global_step == 5 and model.nonfinite_skipped == 1
    [warning] = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    assert warning.startswith(f"step {BAD_STEP}: the loss went non-finite (loss/nan_regularizer = nan")
    # the update of the bad step (the third, ending at global step 3) did not happen; the others did
    wte = "backbone.transformer.wte.weight"
    assert torch.equal(snapshots.weights[BAD_STEP + 1][wte], snapshots.weights[BAD_STEP][wte])
    assert not torch.equal(snapshots.weights[BAD_STEP + 2][wte], snapshots.weights[BAD_STEP + 1][wte])
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert {float(s["step"]) for s in trainer.optimizers[0].state.values()} == {4.0}


def test_an_optimizer_that_cannot_skip_on_the_device_is_checked_every_step(corpus_dir: Path, caplog) -> None:
    snapshots = Snapshots()
    optimizer = {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-2, "fused": False}}
    model = LanguageModel(TINY_GPT2, objective=_causal_lm(), optimizer=optimizer,
                          regularizers=[NanRegularizer(BAD_STEP)])
    trainer = Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False, callbacks=[snapshots],
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                      num_sanity_val_steps=0, gradient_clip_val=1.0, log_every_n_steps=50)
    with caplog.at_level(logging.INFO, logger="lmforge.core.module"), pytest.raises(NonFiniteLossError) as excinfo:
        trainer.fit(model, datamodule=text_data({"train": corpus_dir / "train.txt", "val": corpus_dir / "val.txt"},
                                                corpus_dir / "cache"))
    assert str(excinfo.value).startswith(f"step {BAD_STEP}: the loss went non-finite (loss/nan_regularizer = nan")
    assert trainer.global_step == BAD_STEP  # stopped in the bad step itself
    assert any("cannot skip a step on the device" in r.getMessage() and "AdamW" in r.getMessage()
               for r in caplog.records)
