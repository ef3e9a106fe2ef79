"""Trains a tiny GPT-2 for a few steps; launched by tests/scale/test_distributed.py (Lightning re-launches it
once per rank for ``ddp``/``fsdp2``). Writes ``<mode>-rank<r>.pt`` with the final weights and losses.

    python _train_script.py MODE OUT_DIR CORPUS [CKPT]     MODE: single | ddp | fsdp2 | fsdp2-dcp | stream

``ddp-probe``: ``ddp`` with a ``BiasProbe`` (OUT_DIR/pairs.csv) at a validation after the last step; writes
the logged ``bias/...`` values, the probe's pair scores and the same pairs scored by this one process alone.

``ddp-plugins``: ``ddp`` with ``AdversarialDebiasing`` and ``LogitDistillation`` from OUT_DIR/teacher (a HF
model directory with its tokenizer, which the run uses); writes what the teacher shares with the optimizer and
the DDP-wrapped module, and its weights after training.

``fsdp2-plugins``: ``fsdp2`` (one full checkpoint file) with the built-in plugins that have parameters,
``AdversarialDebiasing`` (its adversary head) and ``HiddenStateDistillation`` from the wider OUT_DIR/teacher (its
learned projection), for 8 steps with a checkpoint after each; writes every step's logged ``loss/...`` terms.

``ddp-random``: ``ddp`` with dropout on and ``TokenNoise`` (the step generator), for 8 steps with a checkpoint
after each: every rank's random generators must come back on resume.

``fsdp2-dcp``: ``fsdp2`` saving distributed checkpoints (one shard per rank, a directory), after every step.

``stream``: DDP over ``TextData(streaming=True)`` with 2 dataloader workers per rank (CORPUS is a glob of
shards), a checkpoint after every step, and the blocks of every step recorded.
"""

import sys
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from lmforge.cli.training import release_process_group
from lmforge.core.backbone import Backbone
from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining
from lmforge.core.module import LanguageModel
from lmforge.core.plugins import Regularizer
from lmforge.plugins.augmenters.token_noise import TokenNoise
from lmforge.plugins.bias.adversarial_debiasing import AdversarialDebiasing
from lmforge.plugins.bias.probe import BiasProbe, score_pairs
from lmforge.plugins.distillation.hidden_state_distillation import HiddenStateDistillation
from lmforge.plugins.distillation.logit_distillation import LogitDistillation
from lmforge.plugins.objectives.causal_lm import CausalLM
from lmforge.plugins.regularizers.l2_penalty import L2Penalty
from lmforge.runtime.strategies import FSDP2Strategy

NO_DROPOUT = {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}  # ranks draw different dropout masks
TINY = Backbone(architecture="gpt2", config={"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 16, **NO_DROPOUT})
STEPS = 4


class ProbeHead(Regularizer):
    """A plugin with its own parameters (like an adversary head): a linear probe on the last hidden state."""

    needs_hidden_states = True

    def setup(self, module: LanguageModel) -> None:
        self.head = nn.Linear(module.backbone.config.n_embd, 1)
        self.bias = nn.Parameter(torch.zeros(()))  # read directly, outside any forward

    def loss(self, ctx):
        return 0.1 * (self.head(ctx.outputs.hidden_states[-1]) + self.bias).pow(2).mean()


class PenaltyCheck(Callback):
    """Per step: the L2 term the run logged, and the same penalty computed here from the whole weights
    (gathered from the shards) in plain torch, as one process would."""

    def __init__(self, penalty: L2Penalty) -> None:
        self.penalty, self.logged, self.expected = penalty, {}, {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        params = dict(module.backbone.named_parameters())
        whole = [params[n].full_tensor() for n in self.penalty.parameter_names]
        self.expected[trainer.global_step + 1] = self.penalty.weight * sum(float(w.double().pow(2).sum()) for w in whole)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.logged[trainer.global_step] = float(trainer.callback_metrics["loss/l2_penalty"])


class TeacherCheck(Callback):
    """During training (Lightning unwraps the model at the end): what the teacher shares with the optimizer
    and the DDP-wrapped module."""

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        teacher = {id(p) for p in module.distiller._teacher.model.parameters()}
        optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
        wrapped = {id(p) for p in trainer.strategy.model.parameters()}
        self.found = {"wrapper": type(trainer.strategy.model).__name__,
                      "teacher_in_optimizer": len(teacher & optimized), "teacher_in_wrapped_module": len(teacher & wrapped),
                      "teacher_training": module.distiller._teacher.model.training,
                      "terms": sorted(k for k in trainer.callback_metrics
                                     if k.startswith(("loss/", "metric/adversarial_debiasing/")))}


class Losses(Callback):
    def __init__(self) -> None:
        self.by_step = {}
        self.blocks = {}
        self.terms = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.by_step[trainer.global_step] = float(outputs["loss"])
        self.terms[trainer.global_step] = {k: float(v) for k, v in trainer.callback_metrics.items()
                                           if k.startswith("loss/")}
        self.blocks[trainer.global_step] = (trainer.current_epoch, batch["input_ids"].tolist())


def main() -> None:
    mode, out, corpus = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    ckpt = sys.argv[4] if len(sys.argv) > 4 else None
    seed_everything(0)
    world = 1 if mode == "single" else 2
    stream = mode == "stream"
    teacher = out / "teacher"
    tokenizer = TokenizerSpec(path=str(teacher)) if mode.endswith("-plugins") else TokenizerSpec(
        train=TokenizerTraining(vocab_size=300))
    data = TextData(train=corpus, val=corpus, tokenizer=tokenizer,
                    block_size=16, batch_size=8 // world, cache_dir=str(out / "cache"), seed=0, streaming=stream,
                    num_workers=2 if stream else 0)
    data.checkpoint_path = ckpt
    penalty = L2Penalty(weight=0.01)
    sharded = mode.startswith("fsdp2")
    plugins = [ProbeHead(), penalty] if sharded and mode != "fsdp2-plugins" else []
    extra = {}
    if mode == "ddp-plugins":
        extra = {"bias_mitigators": [AdversarialDebiasing(adversary_hidden=8)],
                 "distiller": LogitDistillation(teacher=str(teacher))}
    if mode == "fsdp2-plugins":
        extra = {"bias_mitigators": [AdversarialDebiasing(adversary_hidden=8)],
                 "distiller": HiddenStateDistillation(teacher=str(teacher), metric="mse")}
    backbone = TINY
    if mode == "ddp-random":
        backbone = Backbone(architecture="gpt2", config={**TINY.config, "resid_pdrop": 0.1, "embd_pdrop": 0.1})
        extra = {"augmenters": [TokenNoise(replace_probability=0.2)]}
    model = LanguageModel(backbone, CausalLM(), regularizers=plugins, **extra)
    strategy = {"single": "auto", "ddp": "ddp", "stream": "ddp", "ddp-probe": "ddp", "ddp-plugins": "ddp", "ddp-random": "ddp",
                "fsdp2": FSDP2Strategy(save_distributed_checkpoint=False),
                "fsdp2-plugins": FSDP2Strategy(save_distributed_checkpoint=False),
                "fsdp2-dcp": FSDP2Strategy(save_distributed_checkpoint=True)}[mode]
    losses = Losses()
    callbacks = [losses, ModelCheckpoint(dirpath=out / "ckpt", save_last=True, every_n_train_steps=2, save_top_k=0)]
    if plugins:
        callbacks.append(PenaltyCheck(penalty))
    probe = BiasProbe(pairs=str(out / "pairs.csv"), batch_size=2) if mode == "ddp-probe" else None
    if probe is not None:
        callbacks.append(probe)
    teacher_check = TeacherCheck() if mode == "ddp-plugins" else None
    if teacher_check is not None:
        callbacks.append(teacher_check)
    per_step = stream or mode in ("fsdp2-dcp", "fsdp2-plugins", "ddp-random")
    if per_step:
        callbacks.append(ModelCheckpoint(dirpath=out / "steps", filename="{step}", every_n_train_steps=1, save_top_k=-1))
    steps = 2 * STEPS if ckpt is not None or per_step else STEPS
    trainer = Trainer(max_steps=steps, accelerator="cpu", devices=world,
                      strategy=strategy, logger=False, callbacks=callbacks, num_sanity_val_steps=0,
                      limit_val_batches=1 if probe else 0, val_check_interval=STEPS if probe else None,
                      enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1)
    trainer.fit(model, datamodule=data, ckpt_path=ckpt)
    state = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
             for k, v in model.state_dict().items()}
    tag = "resumed" if ckpt else mode
    checks = [c for c in callbacks if isinstance(c, PenaltyCheck)]
    penalties = {"logged": checks[0].logged, "expected": checks[0].expected} if checks else None
    bias = None
    if probe is not None:
        alone = score_pairs(model.backbone, model.tokenizer, probe.pairs, "causal", batch_size=2)
        bias = {"logged": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("bias/")},
                "scores": (probe.result.more, probe.result.less), "alone": (alone.more, alone.less),
                "alone_scores": alone.scores()}
    plugins_check = None
    if teacher_check is not None:
        teacher_state = model.distiller._teacher.model.state_dict()
        plugins_check = {**teacher_check.found, "teacher": {k: v.detach().clone() for k, v in teacher_state.items()}}
    torch.save({"state": state, "losses": losses.by_step, "terms": losses.terms, "blocks": losses.blocks,
                "penalty": penalties, "bias": bias, "plugins": plugins_check},
               out / f"{tag}-rank{trainer.global_rank}.pt")
    release_process_group()  # as `lmforge fit` does: a gloo group left to interpreter teardown can abort the exit


if __name__ == "__main__":
    main()
