"""A non-finite loss stops the run at the step it happens, naming the term; the last good checkpoint stays.

One plugin of each kind turns NaN at step 2 of a tiny run that checkpoints every step. The run must stop
with ``NonFiniteLossError`` naming ``loss/<term>`` and the step, before the optimizer step; ``last.ckpt``
must be the step-2 state, load with ``weights_only=True``, hold finite weights equal to the model's, and
resume. ``skip`` skips the batch instead. Non-finite *weights* (a finite loss, then a bad update) never
reach a checkpoint. The recipes clip gradients, and bf16 mixed precision keeps the quickstart finite.
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from host_plugins import NanDistiller, NanMitigator, NanRegularizer
from tiny import TINY_GPT2, text_data, write_corpus

from lmforge.cli.recipes import bundled_recipes
from lmforge.core.data.text import TextData
from lmforge.core.module import LanguageModel, NonFiniteLossError, NonFiniteWeightsError
from lmforge.core.plugins import ObjectiveOutput
from lmforge.plugins.objectives.causal_lm import CausalLM
from lmforge.runtime.checkpoint_io import AtomicCheckpointIO

BAD_STEP = 2

class NanObjective(CausalLM):
    """Causal LM whose training loss turns NaN at BAD_STEP (it has no model handle: it counts its calls)."""

    def __init__(self) -> None:
        super().__init__()
        self.training_calls = 0

    def compute(self, outputs, batch) -> ObjectiveOutput:
        result = super().compute(outputs, batch)
        if self.training:
            self.training_calls += 1
            if self.training_calls > BAD_STEP:
                result.loss = result.loss * float("nan")
        return result


KINDS = {
    "objective": (lambda: {"objective": NanObjective()}, "loss/nan_objective"),
    "regularizer": (lambda: {"regularizers": [NanRegularizer(BAD_STEP)]}, "loss/nan_regularizer"),
    "bias mitigator": (lambda: {"bias_mitigators": [NanMitigator(BAD_STEP)]}, "loss/nan_mitigator"),
    "distiller": (lambda: {"distiller": NanDistiller(BAD_STEP)}, "loss/nan_distiller/kl"),
}


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("numerics")
    write_corpus(root / "train.txt", 150, seed=1)
    write_corpus(root / "val.txt", 20, seed=2)
    return root


def make_model(**plugins) -> LanguageModel:
    plugins.setdefault("objective", CausalLM())
    return LanguageModel(TINY_GPT2, **plugins)


def make_data(corpus_dir: Path) -> TextData:
    return text_data({"train": corpus_dir / "train.txt", "val": corpus_dir / "val.txt"}, corpus_dir / "cache")


def make_trainer(root: Path, steps: int) -> Trainer:
    checkpoints = ModelCheckpoint(dirpath=root / "checkpoints", every_n_train_steps=1, save_top_k=-1,
                                  save_last=True, filename="{step}")
    return Trainer(max_steps=steps, accelerator="cpu", logger=False, callbacks=[checkpoints],
                   plugins=[AtomicCheckpointIO()], enable_progress_bar=False, enable_model_summary=False,
                   limit_val_batches=0, num_sanity_val_steps=0, gradient_clip_val=1.0)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_nonfinite_term_stops_at_its_step_naming_it_and_the_last_checkpoint_is_intact(
        kind: str, corpus_dir: Path, tmp_path: Path) -> None:
    plugins, term = KINDS[kind]
    model = make_model(**plugins())
    with pytest.raises(NonFiniteLossError) as excinfo:
        make_trainer(tmp_path, steps=5).fit(model, datamodule=make_data(corpus_dir))
    message = str(excinfo.value)
    assert message.startswith(f"step {BAD_STEP}: the loss went non-finite ({term} = nan")
    assert "--ckpt_path" in message and "model.on_nonfinite_loss: skip" in message

    checkpoints = tmp_path / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt", "last.ckpt.sha256", "step=1.ckpt",
                                                              "step=1.ckpt.sha256", "step=2.ckpt", "step=2.ckpt.sha256"]
    last = load(checkpoints / "last.ckpt")
    assert last["global_step"] == BAD_STEP
    weights = model.state_dict()
    for key, value in last["state_dict"].items():
        assert torch.isfinite(value).all(), key
        assert torch.equal(value, weights[key]), key  # the NaN step updated nothing


def test_a_run_resumes_from_the_checkpoint_left_by_a_nonfinite_stop(corpus_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(NonFiniteLossError):
        make_trainer(tmp_path, steps=5).fit(make_model(regularizers=[NanRegularizer(BAD_STEP)]),
                                            datamodule=make_data(corpus_dir))
    last = tmp_path / "checkpoints" / "last.ckpt"
    resumed = make_model()
    trainer = make_trainer(tmp_path / "resumed", steps=4)
    trainer.fit(resumed, datamodule=make_data(corpus_dir), ckpt_path=last)
    assert trainer.global_step == 4
    assert all(torch.isfinite(p).all() for p in resumed.parameters())


def test_skip_drops_the_bad_batch_and_goes_on(corpus_dir: Path, tmp_path: Path, caplog) -> None:
    model = make_model(regularizers=[NanRegularizer(BAD_STEP, once=True)], on_nonfinite_loss="skip", max_nonfinite_skips=3)
    trainer = make_trainer(tmp_path, steps=4)
    with caplog.at_level(logging.WARNING, logger="lmforge.core.module"):
        trainer.fit(model, datamodule=make_data(corpus_dir))
    assert trainer.global_step == 4 and model.nonfinite_skipped == 1
    [warning] = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
    assert warning.startswith(f"step {BAD_STEP}: the loss went non-finite (loss/nan_regularizer = nan")
    assert "skipping this batch (1 of at most 3)" in warning
    assert all(torch.isfinite(p).all() for p in model.parameters())


class CorruptWeights(Callback):
    """After the update of step BAD_STEP, a NaN weight: what an fp16 update whose epsilon rounds to zero does."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == BAD_STEP + 1:  # runs before ModelCheckpoint, which Lightning puts last
            with torch.no_grad():
                pl_module.backbone.transformer.wte.weight[0, 0] = float("nan")


def test_nonfinite_weights_never_replace_a_good_checkpoint(corpus_dir: Path, tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, steps=5)
    trainer.callbacks.insert(0, CorruptWeights())
    with pytest.raises(NonFiniteWeightsError) as excinfo:
        trainer.fit(make_model(), datamodule=make_data(corpus_dir))
    message = str(excinfo.value)
    assert message.startswith(f"step {BAD_STEP + 1}: the weights are no longer finite (backbone.transformer.wte.weight")
    assert "checkpoints already written are intact" in message and "--ckpt_path" in message
    checkpoints = tmp_path / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt", "last.ckpt.sha256", "step=1.ckpt",
                                                              "step=1.ckpt.sha256", "step=2.ckpt", "step=2.ckpt.sha256"]
    last = load(checkpoints / "last.ckpt")
    assert last["global_step"] == BAD_STEP
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())


TRAINING_RECIPES = sorted(name for name in bundled_recipes() if not name.startswith("overlays/"))


@pytest.mark.parametrize("name", TRAINING_RECIPES)
def test_recipes_clip_gradients(name: str) -> None:
    recipe = yaml.safe_load(bundled_recipes()[name].read_text())
    assert (recipe.get("trainer") or {}).get("gradient_clip_val", 0) > 0, f"{name}: set trainer.gradient_clip_val"


@pytest.mark.slow
def test_quickstart_stays_finite_in_bf16_mixed_precision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16-mixed runs on CPU; on CPU Lightning replaces 16-mixed by bf16-mixed (fp16 autocast needs a GPU)."""
    from reliability_kit import lmforge

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["lmforge"])
    assert lmforge("fit", "--config", "quickstart", "--trainer.precision", "bf16-mixed", "--trainer.max_steps", "8",
                   "--trainer.val_check_interval", "4", "--trainer.limit_val_batches", "2",
                   "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
                   "--data.init_args.batch_size", "4", "--data.init_args.block_size", "32",
                   "--data.init_args.tokenizer.train.vocab_size", "300") == 0
    with open(tmp_path / "runs" / "quickstart" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    losses = [float(r["loss/total"]) for r in rows if r.get("loss/total")]
    val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    assert len(losses) == 8 and len(val) == 2
    assert all(math.isfinite(v) for v in losses + val)
    assert losses[-1] < losses[0]
