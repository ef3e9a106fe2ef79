"""LanguageModel: the one LightningModule. It owns the backbone and every plugin.

A training step is (`LanguageModel.step_terms`)::

    batch = objective.prepare(batch)                 # labels, fresh MLM mask (on device)
    batch = plugin.process_batch(batch) ...          # batch-stage plugins (TokenNoise), in run order
    outputs = backbone(**objective.model_inputs(batch))
    loss = w * objective.compute(outputs, batch).loss + sum(plugin.loss(ctx) ...)   # w: plugins' objective_weight

Each term is logged as ``loss/<term>``, the sum as ``loss/total``; metrics a
plugin returns beside its terms as ``metric/<plugin>/<key>``; the gradient
norm (before clipping) as ``metric/grad_norm`` at the trainer's logging steps.
The plugins' run order, and which of them implement each hook, are computed
once, when the model is built.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import logging
import math
import os
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import instantiate_class
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.utilities import GradClipAlgorithmType
from torch import Tensor, nn
from torch.distributed.tensor import DTensor
from torchmetrics import MeanMetric
from transformers import PreTrainedTokenizerBase

from lmforge.core.backbone import (
    Backbone,
    build_backbone,
    build_config,
    check_start_checkpoint,
    max_positions,
    position_limit,
)
from lmforge.core import lora
from lmforge.core.checkpoint import CKPT_KEY, LORA_KEY
from lmforge.core.hooks import KINDS, RECIPE_KEYS
from lmforge.core.nonfinite import NonFiniteGuard, can_skip_on_device
from lmforge.core.plugin_checks import check_plugins, hook_guard, run_order
from lmforge.core.plugins import (
    Augmenter,
    BiasMitigator,
    DataFilter,
    Distiller,
    HostView,
    LossOutput,
    Objective,
    ObjectiveOutput,
    Plugin,
    Regularizer,
    StepContext,
    overrides,
    wants_hidden_states,
)
from lmforge.core.registry import describe
from lmforge.core.sharding import (
    average_gradients,
    broadcast_parameters,
    fully_shard_blocks,
    replicated_parameters,
)

log = logging.getLogger(__name__)

#: Fused: a step that can be skipped on the device (`lmforge.core.nonfinite`), and no slower on CPU.
DEFAULT_OPTIMIZER = {"class_path": "torch.optim.AdamW", "init_args": {"lr": 3e-4, "fused": True}}
#: Keeps the evaluation generators' seeds apart from the step generator's (run seed + rank).
_EVALUATION_SALT = 0x5EED_E7A1


class LanguageModel(LightningModule):
    """A language model and its plugins.

    Args:
        backbone: The HF network (architecture + config overrides, or a local
            pretrained directory).
        objective: What the model learns (``CausalLM``, ``MaskedLM``, ...).
        regularizers: Penalty terms or model reconfigurations.
        augmenters: Text- or token-level training augmentation.
        bias_mitigators: Data rewrites, filters, reweighting or adversaries.
        distiller: Knowledge distillation from a frozen teacher.
        data_filters: Redact or drop documents before tokenization, on every
            split (personal data, unsafe text); they run first at the data stage.
        optimizer: Set from the recipe's top-level ``optimizer`` key.
        lr_scheduler: Set from the recipe's top-level ``lr_scheduler`` key.
        no_weight_decay_1d: Exempt biases and norm weights (1-D parameters)
            from the optimizer's weight decay, as nanoGPT and the HF Trainer do.
        compile: Compile the backbone with ``torch.compile``.
        on_nonfinite_loss: When the loss is NaN or infinite: ``stop`` (raise, naming the loss terms, their
            plugins and the step) or ``skip`` the batch. The update of that step never happens. With an
            optimizer that can skip a step on the device (torch's fused AdamW, the default), the check is read
            at the next logging step, checkpoint or the end of fit, and ``stop`` skips every update until then;
            with any other optimizer, the loss is read on the host every step.
        max_nonfinite_skips: With ``skip``, stop after this many skipped batches (counted where the check is
            read).
        backbone_lr_scale: Learning rate of the backbone's base model (the
            pretrained encoder or decoder, ``backbone.base_model``) as a share
            of the optimizer's; the rest (a new classification head, plugin
            parameters) trains at the optimizer's rate. 1.0 keeps one rate.
    """

    def __init__(
        self,
        backbone: Backbone,
        objective: Objective,
        regularizers: list[Regularizer] | None = None,
        augmenters: list[Augmenter] | None = None,
        bias_mitigators: list[BiasMitigator] | None = None,
        distiller: Distiller | None = None,
        data_filters: list[DataFilter] | None = None,
        optimizer: dict[str, Any] | None = None,
        lr_scheduler: dict[str, Any] | None = None,
        no_weight_decay_1d: bool = True,
        compile: bool = False,
        on_nonfinite_loss: Literal["stop", "skip"] = "stop",
        max_nonfinite_skips: int = 10,
        backbone_lr_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if not backbone_lr_scale > 0:
            raise ValueError(f"model.backbone_lr_scale must be positive, got {backbone_lr_scale}. "
                             "To keep the backbone fixed, use model.backbone.freeze_embeddings / freeze_layers.")
        if backbone.lora is not None and backbone_lr_scale != 1.0:
            raise ValueError(f"model.backbone_lr_scale must be 1 with model.backbone.lora, got {backbone_lr_scale}: "
                             "with LoRA the base model is frozen and only the adapters train. Set the adapters' "
                             "rate with optimizer.init_args.lr, or their scale with model.backbone.lora.alpha.")
        self.save_hyperparameters(ignore=["objective", *RECIPE_KEYS.values()])
        if isinstance(self.hparams.get("backbone"), Backbone):  # keep checkpoints loadable with weights_only=True
            self.hparams["backbone"] = dataclasses.asdict(backbone)
        self.backbone_spec = backbone
        self.objective = objective
        self.regularizers = nn.ModuleList(regularizers or [])
        self.augmenters = nn.ModuleList(augmenters or [])
        self.bias_mitigators = nn.ModuleList(bias_mitigators or [])
        self.distiller = distiller
        self.data_filters = nn.ModuleList(data_filters or [])
        self.optimizer_init = optimizer or DEFAULT_OPTIMIZER
        check_optimizer(self.optimizer_init)
        self.lr_scheduler_init = lr_scheduler
        self.no_weight_decay_1d = no_weight_decay_1d
        self.compile_backbone = compile
        if max_nonfinite_skips < 0:
            raise ValueError(f"model.max_nonfinite_skips must be >= 0, got {max_nonfinite_skips}.")
        self.on_nonfinite_loss = on_nonfinite_loss
        self.max_nonfinite_skips = max_nonfinite_skips
        self.nonfinite_skipped = 0
        #: Set at the start of fit when every optimizer can skip a step on the device; else the per-step check.
        self._nonfinite_guard: NonFiniteGuard | None = None
        self._nonfinite_last = False  # the latest check found this step's loss non-finite
        #: Training batches this run has seen; a run that skipped every one of them fails at its end.
        self.batches_seen = 0
        self.backbone_lr_scale = backbone_lr_scale
        self.backbone: nn.Module | None = None
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.generator: torch.Generator | None = None
        self.val_loss = MeanMetric()
        self.val_metrics = nn.ModuleDict({name: MeanMetric() for name in objective.metric_names})
        check_plugins(objective, self._recipe_keys())  # before any data is read: refuse what cannot work
        check_start_checkpoint(backbone, objective.auto_model)  # an MLM checkpoint cannot start a causal LM
        #: Every plugin but the objective, in run order: computed once (`lmforge.core.plugin_checks.run_order`).
        self._run_order = run_order([plugin for _, plugin in self._recipe_keys()])
        self._by_hook = {hook: [p for p in self._run_order if overrides(p, hook)]
                         for hook in ("process_text", "sample_weights", "setup", "process_batch", "loss")}
        self._hidden_states = any(wants_hidden_states(p) for p in self._run_order)
        self._objective_weight = math.prod(p.objective_weight for p in self._run_order if p.objective_weight is not None)
        #: The objective's own torchmetrics (``Objective.epoch_metrics``), created in configure_model.
        self.epoch_metrics = nn.ModuleDict()
        self._check_plugin_names()
        if backbone.trust_remote_code:
            # Said when the recipe is read, before any of that code can run (AutoConfig may run it too).
            log.warning("model.backbone.trust_remote_code is on: code from %s will run.", backbone.pretrained)

    # -- plugins ---------------------------------------------------------------------------------

    def plugins(self) -> list[Plugin]:
        """Every plugin except the objective, in run order: recipe order (regularizers, augmenters, bias
        mitigators, the distiller, data filters), adjusted to the plugins' ``runs_after``/``runs_before``."""
        return list(self._run_order)

    def data_plugins(self) -> list[Plugin]:
        """The plugins with data-stage hooks (``process_text``, ``sample_weights``), in run order: what the
        DataModule runs."""
        return [p for p in self._run_order if p in self._by_hook["process_text"] or p in self._by_hook["sample_weights"]]

    def _recipe_keys(self) -> list[tuple[str, Plugin]]:
        """``(recipe key, plugin)`` for every plugin but the objective, in recipe order: ``("model.regularizers[0]",
        ...)``."""
        keys: list[tuple[str, Plugin]] = []
        for kind in KINDS:
            if kind.name == "objective":
                continue
            value = getattr(self, kind.recipe_key)
            if kind.many:
                keys += [(f"model.{kind.recipe_key}[{i}]", plugin) for i, plugin in enumerate(value)]
            elif value is not None:
                keys.append((f"model.{kind.recipe_key}", value))
        return keys

    def _check_plugin_names(self) -> None:
        names = [self.objective.name, *(p.name for p in self.plugins())]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(
                f"model: plugin(s) {dupes} appear more than once; their loss terms would share a log key. "
                "List each plugin once."
            )

    # -- model stage -----------------------------------------------------------------------------

    def configure_model(self) -> None:
        if self.backbone is not None:
            return
        self.tokenizer = self._find_tokenizer()
        self.objective.bind_data(self._datamodule())
        config = build_config(self.backbone_spec, self.tokenizer)
        self.objective.build_backbone_config(config)
        self._check_block_size(self._datamodule(), max_positions(config))
        self.backbone = build_backbone(self.backbone_spec, self.objective.auto_model, config)
        # from_pretrained returns a model in eval mode, and Lightning keeps each module's mode when fitting
        # starts: without this a pretrained backbone would train with its dropout off. Evaluation loops still
        # switch to eval mode themselves; a frozen teacher (set up below) stays in eval mode.
        self.backbone.train()
        host = HostView(self)
        for plugin in [self.objective, *self._by_hook["setup"]]:
            with hook_guard(plugin, "setup"):
                plugin.setup(host)
        self._add_epoch_metrics()
        if self.device_mesh is not None and self.backbone_spec.lora is not None:
            raise ValueError("model.backbone.lora: LoRA does not run under FSDP2 sharding (overlays/fsdp2); use "
                             "overlays/ddp: with LoRA only the adapters have gradients and optimizer state.")
        if self.device_mesh is not None:  # FSDP2 (ModelParallelStrategy): shard the blocks, replicate plugins
            fully_shard_blocks(self.backbone, self._data_parallel_mesh())
            broadcast_parameters(replicated_parameters(self), self._data_parallel_mesh())
        if self.compile_backbone:
            self.backbone.compile()

    def _data_parallel_mesh(self) -> Any:
        mesh = self.device_mesh
        return mesh["data_parallel"] if "data_parallel" in (mesh.mesh_dim_names or ()) else mesh

    def on_after_backward(self) -> None:
        if self.device_mesh is not None:  # FSDP2 reduced the sharded gradients; the replicated ones are ours
            average_gradients(replicated_parameters(self), self._data_parallel_mesh())

    def _datamodule(self) -> Any:
        return getattr(self._trainer, "datamodule", None) if self._trainer is not None else None

    def _add_epoch_metrics(self) -> None:
        metrics = self.objective.epoch_metrics()
        clash = sorted(set(metrics) & set(self.val_metrics))
        if clash:
            raise ValueError(f"{type(self.objective).__name__}: epoch_metrics and metric_names both define {clash}; "
                             "each metric name may come from one of them.")
        self.epoch_metrics = nn.ModuleDict(metrics).to(self.device)

    def _find_tokenizer(self) -> PreTrainedTokenizerBase:
        if self.tokenizer is not None:
            return self.tokenizer
        tokenizer = getattr(self._datamodule(), "tokenizer", None)
        if tokenizer is None:
            raise RuntimeError(
                "LanguageModel needs a tokenizer before its backbone is built: attach a TextData datamodule, "
                "or set model.tokenizer before calling configure_model()."
            )
        return tokenizer

    def check_data(self, datamodule: Any) -> None:
        """Refuse data settings this model cannot take (``block_size`` or ``max_length`` beyond the backbone's
        positions).

        `TextData` calls it before it reads any file, so the error comes before tokenization; it needs only
        the backbone's config, not the tokenizer.
        """
        self._check_block_size(datamodule, position_limit(self.backbone_spec))

    @staticmethod
    def _check_block_size(datamodule: Any, limit: int | None) -> None:
        for key in ("block_size", "max_length"):  # TextData's block, LabeledTextData's truncation length
            length = getattr(datamodule, key, None)
            if isinstance(length, int) and limit is not None and length > limit:
                raise ValueError(
                    f"data.{key}={length} is longer than the model's {limit} positions; lower data.{key} "
                    "or raise the position count in model.backbone.config (e.g. n_positions / "
                    "max_position_embeddings)."
                )

    # -- steps -----------------------------------------------------------------------------------

    def forward(self, batch: dict[str, Tensor]) -> Any:
        return self.backbone(**self.objective.model_inputs(batch), output_hidden_states=self._hidden_states)

    def _generator(self) -> torch.Generator:
        """The step generator: every on-device random choice (MLM masks, token noise) draws from it.

        Seeded from the run's seed and the rank, so ranks draw different masks; saved in checkpoints.
        """
        if self.generator is None or self.generator.device != self.device:
            self.generator = torch.Generator(device=self.device)
            self.generator.manual_seed((torch.initial_seed() + self.global_rank) % (2**63))
        return self.generator

    def step_terms(self, batch: dict[str, Tensor], generator: torch.Generator) -> StepResult:
        """One training step's work up to the loss: ``prepare``, the plugins' ``process_batch``, the forward
        pass, the objective's ``compute`` and the plugins' ``loss``, in run order."""
        batch = self.objective.prepare(batch, generator)
        for plugin in self._by_hook["process_batch"]:
            with hook_guard(plugin, "process_batch"):
                batch = plugin.process_batch(batch, generator)
        outputs = self(batch)
        result = self.objective.compute(outputs, batch)
        terms = {self.objective.name: result.loss * self._objective_weight}
        metrics: dict[str, Tensor] = {}
        ctx = self.step_context(batch, outputs, result)
        for plugin in self._by_hook["loss"]:
            with hook_guard(plugin, "loss"):
                value = plugin.loss(ctx)
            plugin_terms, plugin_metrics = named_terms(plugin, value)
            terms.update(plugin_terms)
            metrics.update(plugin_metrics)
        return StepResult(batch, outputs, result, terms, metrics)

    def step_context(self, batch: dict[str, Tensor], outputs: Any, result: ObjectiveOutput) -> StepContext:
        """What the plugins' ``loss`` hooks see of a step."""
        return StepContext(batch=batch, outputs=outputs, objective_loss=result.loss, objective=self.objective,
                           forward=self, step=self.global_step, backbone=self.backbone, model=self)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        step = self.step_terms(batch, self._generator())
        terms, result = step.terms, step.result
        self.batches_seen += 1
        values = torch.stack(list(terms.values()))
        total = values.sum()
        if self._nonfinite_guard is None:
            # The optimizer cannot skip an update on the device: one host read per step buys detection at the
            # step it happens, before the optimizer writes NaN into the weights.
            if not bool(torch.isfinite(total)):
                return self._skip_or_stop(self.global_step, {k: float(v.detach()) for k, v in terms.items()})
        else:  # recorded on the device; read at logging steps, before a checkpoint, at the end of fit
            self._nonfinite_guard.record(self.global_step, terms, values, total)
            if self._logging_step():
                self._check_nonfinite(log_now=True)
        if not self._logging_step():
            # Only a logging step's values reach the loggers and the progress bar, and each self.log call costs
            # host time (Lightning moves its running metric to the value's device): the step's fixed cost
            # without them, 0.78 -> 0.90 of a plain loop's throughput at 2 x 64 tokens a step
            # (docs/performance.md). So trainer.callback_metrics holds the last logging step's training values.
            return total
        batch_size = step.batch["input_ids"].shape[0]
        # Not on the progress bar through self.log: Lightning would read it on the host every step
        # (lmforge.runtime.console shows it at logging steps).
        self.log("loss/total", total, batch_size=batch_size)
        self.log_dict({f"loss/{k}": v for k, v in terms.items()}, batch_size=batch_size)
        if step.metrics:
            self.log_dict({f"metric/{k}": v.detach() for k, v in step.metrics.items()}, batch_size=batch_size)
        if self.objective.reports_perplexity:
            nll = result.nll if result.nll is not None else result.loss
            self.log("metric/perplexity", torch.exp(nll.detach()), batch_size=batch_size)
        for name, (value, _) in result.metrics.items():
            self.log(f"metric/{name}", value, batch_size=batch_size)
        return total

    def _logging_step(self) -> bool:
        """Whether this training step's values reach the loggers (they are read on the host then anyway)."""
        every = self.trainer.log_every_n_steps if self._trainer is not None else 0
        return every > 0 and (self.trainer.global_step + 1) % every == 0

    def on_train_start(self) -> None:
        optimizers = self.trainer.optimizers
        if optimizers and all(can_skip_on_device(o) for o in optimizers):
            self._nonfinite_guard = NonFiniteGuard()
        else:
            self._nonfinite_guard = None
            names = ", ".join(sorted({type(o).__name__ for o in optimizers})) or "none"
            log.info("The optimizer (%s) cannot skip a step on the device (torch's fused Adam/AdamW/SGD/Adagrad "
                     "can: optimizer.init_args.fused: true), so the non-finite loss check reads the loss on the "
                     "host every step.", names)
        self._log_data_reports()

    def _check_nonfinite(self, log_now: bool = False) -> None:
        """Read the device-side record of non-finite losses (one host read), then skip or stop.

        Every rank calls it at the same points (logging steps, checkpoints, the end of fit), and the ranks decide
        together, so that none is left waiting in a collective.
        """
        if self._nonfinite_guard is None:
            return
        found = self._nonfinite_guard.read()
        self._nonfinite_last = found is not None and found.last
        anywhere = found is not None
        if self._trainer is not None and self.trainer.world_size > 1:
            anywhere = self.trainer.strategy.reduce_boolean_decision(anywhere, all=False)
        if found is not None:
            self._skip_or_stop(found.step, found.terms, found.count, log_now=log_now)
        elif anywhere and self.on_nonfinite_loss == "stop":
            raise NonFiniteLossError(f"step {self.global_step}: the loss went non-finite on another rank; stopping.")

    def _skip_or_stop(self, step: int, terms: dict[str, float], count: int = 1, log_now: bool = True) -> None:
        """Skip the batch (returning None skips backward and the optimizer step) or stop the run.

        ``terms``: each term's value at ``step``, the first of ``count`` steps whose loss was not finite.
        ``log_now``: in a training step, where Lightning lets ``self.log`` run (not at a checkpoint or the end of fit,
        where the warning alone says it).
        """
        owners = {p.name: p for p in [self.objective, *self.plugins()]}  # term "r_drop" or "name/key" -> plugin
        bad = ", ".join(f"loss/{k} = {v} from {describe(owners[k.split('/')[0]])}"
                        for k, v in terms.items() if not math.isfinite(v))
        where = f"step {step}: the loss went non-finite ({bad})"
        more = f" and {count - 1} more by step {self.global_step}" if count > 1 else ""
        self.nonfinite_skipped += count
        if self.on_nonfinite_loss == "skip" and self.nonfinite_skipped <= self.max_nonfinite_skips:
            log.warning("%s; skipping this batch%s (%d of at most %d).", where, more, self.nonfinite_skipped,
                        self.max_nonfinite_skips)
            if log_now:  # the skipped step's loss is logged as it was (not left at the last finite value)
                self.log("loss/total", float("nan"), batch_size=1)
                self.log("train/skipped_batches", float(self.nonfinite_skipped), batch_size=1)
            return None
        limit = f" after skipping {self.max_nonfinite_skips} batches" if self.on_nonfinite_loss == "skip" else ""
        raise NonFiniteLossError(
            f"{where}; stopping{limit}. The weights were not updated with it, and the checkpoints already "
            "written are intact: resume from the last one with --ckpt_path after lowering the learning rate, "
            "enabling gradient clipping (trainer.gradient_clip_val) or checking the plugin named above; or set "
            "model.on_nonfinite_loss: skip to skip such batches."
        )

    def on_train_end(self) -> None:
        self._check_nonfinite()
        # A run that skipped every batch learned nothing; it must not end as if it had trained. All ranks decide
        # together, so that none is left waiting for another.
        untrained = bool(self.nonfinite_skipped and self.nonfinite_skipped >= self.batches_seen)
        strategy = self._trainer.strategy if self._trainer is not None else None
        if strategy is not None:
            untrained = strategy.reduce_boolean_decision(untrained, all=True)
        if untrained:
            raise NonFiniteLossError(
                f"every batch of this run ({self.nonfinite_skipped}) had a non-finite loss and was skipped "
                "(model.on_nonfinite_loss: skip), so the weights were never updated: the checkpoints this run wrote "
                "hold the weights it started from, not a trained model. Check the data, the learning rate and the "
                "plugins named in the warnings above."
            )

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx)

    def _evaluation_generator(self, batch_idx: int) -> torch.Generator:
        """The random choices of evaluation (MLM masks) for batch ``batch_idx``: seeded from the run's seed, the
        rank and the batch, never from the step generator. Every validation of the same weights scores the same
        masks (a later ``lmforge validate`` reproduces the logged val/loss), and validating does not change what
        training draws next."""
        seed = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed()))
        mixed = ((seed * 1_000_003 + self.global_rank) * 1_000_033 + batch_idx + _EVALUATION_SALT) % (2**63)
        return torch.Generator(device=self.device).manual_seed(mixed)

    def _evaluate(self, batch: dict[str, Tensor], batch_idx: int = 0) -> None:
        batch = self.objective.prepare(batch, self._evaluation_generator(batch_idx))
        outputs = self(batch)
        result = self.objective.compute(outputs, batch)
        nll = result.nll if result.nll is not None else result.loss
        self.val_loss.update(nll, result.count)
        for name, (value, weight) in result.metrics.items():
            self.val_metrics[name].update(value, weight)
        if len(self.epoch_metrics):
            self.objective.update_epoch_metrics(dict(self.epoch_metrics.items()), outputs, batch)

    def _log_data_reports(self) -> None:
        # What the data-stage plugins reported (redactions by type, documents dropped), with the metrics.
        reports = getattr(self._datamodule(), "data_reports", None) or {}
        figures = {f"data/{split}/{plugin}/{name}": value for split, by_plugin in reports.items()
                   for plugin, report in by_plugin.items() for name, value in report.items()}
        if figures:
            for logger in self.loggers:
                logger.log_metrics(figures, step=self.global_step)

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    def _log_evaluation(self, split: str) -> None:
        # MeanMetric weighted by token counts: a true per-token mean over the split, synced across ranks.
        loss = self.val_loss.compute()
        if not bool(torch.isfinite(loss)):
            self._nonfinite_evaluation(split, loss)
        self.log(f"{split}/loss", loss, prog_bar=True)
        if self.objective.reports_perplexity:
            self.log(f"{split}/perplexity", torch.exp(loss))
        for name, metric in [*self.val_metrics.items(), *self.epoch_metrics.items()]:
            self.log(f"{split}/{name}", metric.compute())
            metric.reset()
        self.val_loss.reset()

    def _nonfinite_evaluation(self, split: str, loss: Tensor) -> None:
        """A non-finite evaluation loss: every batch of the split was NaN or infinite (the metric drops single
        ones). While fitting, stop before a checkpoint callback can keep it as the "best"; otherwise warn."""
        where = f"step {self.global_step}: the {split} loss is {float(loss)} on every batch"
        if self._trainer is not None and self.trainer.state.fn == "fit":
            self.val_loss.reset()
            raise NonFiniteLossError(
                f"{where}, so the model's outputs are not finite; stopping before a checkpoint is chosen by it. The "
                "checkpoints already written are unchanged. Check model.backbone.config, the learning rate and the "
                "data; resume from an earlier checkpoint with --ckpt_path."
            )
        log.warning("%s: the model's outputs are not finite, and the scores below mean nothing.", where)

    # -- optimization ----------------------------------------------------------------------------

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self._nonfinite_guard is not None:
            self._set_found_inf(getattr(optimizer, "optimizer", optimizer))
        # Only on logging steps: the norm reads every gradient, and only the logged values are ever seen; not
        # after a non-finite loss (its gradients are NaN, and the update is skipped).
        if not self._logging_step() or self._nonfinite_last:
            return
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if grads:
            self.log("metric/grad_norm", gradient_norm(grads))

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        precision = self.trainer.precision_plugin
        if gradient_clip_val and can_skip_on_device(optimizer) and getattr(precision, "scaler", True) is None:
            # Lightning refuses to clip for an optimizer that unscales inside its step (the fused ones) under
            # mixed precision; that matters only with a GradScaler (16-mixed), and bf16-mixed has none.
            Precision.clip_gradients(precision, optimizer, gradient_clip_val,
                                     GradClipAlgorithmType(gradient_clip_algorithm or "norm"))
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def _set_found_inf(self, optimizer: torch.optim.Optimizer) -> None:
        """Make the fused optimizer skip this update on the device when a loss since the last one was not finite
        (with ``stop``: every update after it, until the check stops the run)."""
        flag = self._nonfinite_guard.found_inf(sticky=self.on_nonfinite_loss == "stop")
        if flag is None:
            optimizer.__dict__.pop("found_inf", None)
            return
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # the ranks' gradients are averaged: all skip together
        optimizer.found_inf = flag

    def param_groups(self) -> list[dict[str, Any]]:
        """Parameters for the optimizer; 1-D ones (biases, norms) get no weight decay.

        The groups are named (``decay``, ``no_decay``), so ``LearningRateMonitor`` logs
        ``lr-<Optimizer>/decay`` rather than ``lr-<Optimizer>/pg1``. Frozen parameters are left
        out. With ``backbone_lr_scale`` != 1 the base model's parameters form their own groups
        (``backbone_decay``, ``backbone_no_decay``), marked ``lr_scale``; ``configure_optimizers``
        multiplies those groups' learning rate by it.
        """
        params = [p for p in self.parameters() if p.requires_grad]
        if self.backbone_lr_scale == 1.0:
            return self._decay_groups(params, {}, "")
        base = {id(p) for p in self.backbone.base_model.parameters()}
        groups = (self._decay_groups([p for p in params if id(p) in base], {"lr_scale": self.backbone_lr_scale},
                                     "backbone_")
                  + self._decay_groups([p for p in params if id(p) not in base], {}, ""))
        return [g for g in groups if g["params"]]

    def _decay_groups(self, params: list[nn.Parameter], extra: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
        """``prefix`` keeps the group names unique (LearningRateMonitor refuses repeated names)."""
        if not self.no_weight_decay_1d:
            return [{"params": params, **({"name": prefix + "all"} if prefix else {}), **extra}]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        return [{"params": decay, "name": f"{prefix}decay", **extra},
                {"params": no_decay, "weight_decay": 0.0, "name": f"{prefix}no_decay", **extra}]

    def configure_optimizers(self) -> Any:
        init = self.optimizer_init
        groups = self.param_groups()
        if init.get("init_args", {}).get("fused") and any(
                isinstance(p, DTensor) for group in groups for p in group["params"]):
            # torch's fused kernels refuse sharded (DTensor) parameters mixed with their plain step tensors
            # ("got mixed torch.Tensor and DTensor"): FSDP2 runs use the unfused implementation.
            log.info("optimizer.init_args.fused: the fused kernels do not take FSDP2's sharded parameters; "
                     "using the unfused implementation.")
            init = {**init, "init_args": {**init["init_args"], "fused": False}}
        optimizer = instantiate_class(groups, init)
        for group in optimizer.param_groups:  # before the scheduler records each group's initial rate
            group["lr"] = group["lr"] * group.get("lr_scale", 1.0)
        if self.lr_scheduler_init is None:
            return optimizer
        init = copy.deepcopy(self.lr_scheduler_init)
        module_name, class_name = init["class_path"].rsplit(".", 1)
        scheduler_class = getattr(importlib.import_module(module_name), class_name)
        args = init.setdefault("init_args", {})
        if "total_steps" in inspect.signature(scheduler_class).parameters and args.get("total_steps") is None:
            args["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = instantiate_class(optimizer, init)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"}}
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- checkpoints -----------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Called on every rank (only rank 0 writes): the collectives below see all ranks.
        self._check_nonfinite()  # a run that must stop writes no checkpoint after the non-finite loss
        self._refuse_nonfinite_weights(checkpoint["state_dict"])
        backbone = getattr(self.backbone, "_orig_mod", self.backbone)
        checkpoint[CKPT_KEY] = {
            "auto_model": self.objective.auto_model,
            "config": backbone.config.to_dict(),
            "tokenizer": self.tokenizer.backend_tokenizer.to_str(),
            "tokenizer_config": _tokenizer_config(self.tokenizer),
            "random_per_rank": self._gather_from_ranks(self._random_state()),
        }
        if self.backbone_spec.lora is not None:  # only the adapters: the base model is in its own files
            checkpoint[CKPT_KEY][LORA_KEY] = lora.checkpoint_record(checkpoint["state_dict"], backbone,
                                                                    self.backbone_spec.lora, self.backbone_spec.pretrained)

    def _random_state(self) -> dict[str, Any]:
        """The random generators a resumed run must continue from.

        The step generator draws masks and token noise; dropout draws from the global generators, which
        Lightning does not checkpoint: without them a resumed run would drop different units than the
        uninterrupted one.
        """
        return {
            "generator": self.generator.get_state() if self.generator is not None else None,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        }

    def _gather_from_ranks(self, value: Any) -> list[Any]:
        """``value`` from every rank, by rank (only rank 0 writes the checkpoint, and each rank's generators
        differ: the step generator is seeded with the rank)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return [value]
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, value)
        return gathered

    def _refuse_nonfinite_weights(self, state: dict[str, Any]) -> None:
        """Never write a checkpoint whose weights are NaN or infinite: it would replace a good one.

        A finite loss can still end in non-finite weights (an optimizer update that divides by an epsilon
        fp16 rounds to zero); this is where such weights would become permanent. All ranks decide together
        (their shards differ), so that none is left waiting in a collective.
        """
        bad = [k for k, v in state.items()
               if isinstance(v, Tensor) and v.is_floating_point() and not bool(torch.isfinite(_local(v)).all())]
        strategy = self._trainer.strategy if self._trainer is not None else None
        if not (strategy.reduce_boolean_decision(bool(bad), all=False) if strategy is not None else bool(bad)):
            return
        named = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "") if bad else "on another rank"
        raise NonFiniteWeightsError(
            f"step {self.global_step}: the weights are no longer finite ({named}); this checkpoint is not written, "
            "so the checkpoints already written are intact: resume from the last one with --ckpt_path after "
            "lowering the learning rate or using bf16-mixed or 32-bit precision (pure 16-true training "
            "rounds the optimizer's epsilon to zero)."
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.backbone is not None:  # a LoRA checkpoint: check it, and add the frozen base weights it leaves out
            lora.restore_base(checkpoint, self.backbone_spec.lora, self.backbone_spec.pretrained, self, self.backbone)
        saved = checkpoint.get(CKPT_KEY)
        if saved is None or self.tokenizer is None:
            return
        from tokenizers import Tokenizer

        if Tokenizer.from_str(saved["tokenizer"]).get_vocab() != self.tokenizer.backend_tokenizer.get_vocab():
            raise ValueError(
                "The checkpoint was trained with a different tokenizer than this run's data.tokenizer; "
                "point data.tokenizer.path at the run's tokenizer/ directory."
            )
        if self.backbone is not None:
            saved_labels = _label_names(saved["config"])
            labels = _label_names(getattr(self.backbone, "_orig_mod", self.backbone).config.to_dict())
            if saved_labels != labels:
                raise ValueError(
                    f"The checkpoint was trained with the labels {saved_labels} (by id) but this run's data has "
                    f"{labels}; set data.labels to the checkpoint's list (see the run's labels.json)."
                )
        world = self._trainer.world_size if self._trainer is not None else 1
        per_rank = saved.get("random_per_rank") or [saved]  # older checkpoints held rank 0's at the top level
        # This rank's own generators when the checkpoint has them for this many ranks; otherwise (another
        # world size) rank 0's, the best continuation there is.
        random_state = per_rank[self.global_rank] if len(per_rank) == world else per_rank[0]
        if random_state.get("generator") is not None:
            self._generator().set_state(random_state["generator"])
        if random_state.get("torch_rng") is not None:
            torch.set_rng_state(random_state["torch_rng"])
        if random_state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(random_state["cuda_rng"])


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class NonFiniteWeightsError(RuntimeError):
    """The weights became NaN or infinite; the checkpoint that would hold them is not written."""


def _local(tensor: Tensor) -> Tensor:
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor  # a DTensor's shard on this rank


#: Phrases of torch.optim's argument checks and the recipe key each one is about.
_OPTIMIZER_PHRASES = {"learning rate": "lr", "epsilon": "eps", "beta": "betas", "weight_decay": "weight_decay",
                      "momentum": "momentum", "lr_decay": "lr_decay", "rho": "rho", "alpha": "alpha"}


def check_optimizer(init: dict[str, Any]) -> None:
    """Refuse an optimizer the recipe sets up wrongly now, not after the data is tokenized.

    A negative ``lr`` is refused for any optimizer; a ``torch.optim`` optimizer is also built once on a
    dummy parameter, so its own argument checks (eps, betas, weight_decay, ...) run now, and its error is
    given with the recipe key it is about.
    """
    args = init.get("init_args") or {}
    lr = args.get("lr")
    if isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr < 0:
        raise ValueError(f"optimizer.init_args.lr must be >= 0, got {lr}. Set a learning rate such as 3.0e-4.")
    if not str(init.get("class_path", "")).startswith("torch.optim."):
        return  # third-party optimizers may need a device or more than a dummy parameter to be built
    try:
        instantiate_class([nn.Parameter(torch.zeros(1))], init)
    except ValueError as exc:
        message = str(exc)
        name = next((k for phrase, k in _OPTIMIZER_PHRASES.items() if phrase in message.lower()), None)
        key = f"optimizer.init_args.{name}" if name else "optimizer.init_args"
        raise ValueError(f"{key}: {init['class_path']} refuses it: {message}.") from None


def gradient_norm(grads: list[Tensor]) -> Tensor:
    """The 2-norm of all gradients together, as ``clip_grad_norm_`` computes it."""
    # FSDP2 shards the backbone's gradients (DTensors) but not the replicated plugins': norm each group apart.
    groups = [[g for g in grads if hasattr(g, "full_tensor")], [g for g in grads if not hasattr(g, "full_tensor")]]
    norms = []
    for group in filter(None, groups):
        norm = torch.nn.utils.get_total_norm(group, norm_type=2.0)
        norms.append(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # sharded: over all ranks
    return torch.linalg.vector_norm(torch.stack(norms)) if len(norms) > 1 else norms[0]


@dataclasses.dataclass
class StepResult:
    """One training step up to the loss (`LanguageModel.step_terms`).

    Attributes:
        batch: The batch after ``prepare`` and the batch-stage plugins.
        outputs: The backbone's outputs.
        result: The objective's output (its unweighted loss, count, metrics).
        terms: Every term of the loss by log name (``causal_lm``, ``l2_penalty``, ``r_drop/kl``...): the
            objective's, weighted by the plugins' ``objective_weight``, and each plugin's.
        metrics: What plugins returned beside their terms, by log name (``adversarial_debiasing/accuracy``).
    """

    batch: dict[str, Tensor]
    outputs: Any
    result: ObjectiveOutput
    terms: dict[str, Tensor]
    metrics: dict[str, Tensor]


def named_terms(plugin: Plugin, value: Tensor | dict[str, Tensor] | LossOutput | None
                ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """A ``loss`` hook's return value as ``(terms, metrics)`` by log name (``<plugin>`` or ``<plugin>/<key>``)."""
    metrics: dict[str, Tensor] = {}
    if isinstance(value, LossOutput):
        metrics = {f"{plugin.name}/{k}": v for k, v in value.metrics.items()}
        value = value.terms
    if value is None:
        terms: dict[str, Tensor] = {}
    elif isinstance(value, dict):
        terms = {f"{plugin.name}/{k}": v for k, v in value.items()}
    else:
        terms = {plugin.name: value}
    for kind, named in (("loss", terms), ("metric", metrics)):
        for name, term in named.items():
            if not isinstance(term, Tensor) or term.ndim != 0:
                shape = tuple(term.shape) if isinstance(term, Tensor) else type(term).__name__
                raise TypeError(
                    f"{type(plugin).__name__}.loss must return a scalar tensor (or a dict or LossOutput of them), got "
                    f"{shape} for {kind}/{name}. Reduce the term (e.g. .mean()) in the plugin {describe(plugin)}."
                )
    return terms, metrics


def _tokenizer_config(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """The special tokens and model inputs, enough to rebuild the fast tokenizer around tokenizer.json."""
    config: dict[str, Any] = {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
    config["model_input_names"] = list(tokenizer.model_input_names)
    if isinstance(getattr(tokenizer, "chat_template", None), str):  # instruction tuning's template, kept for export
        config["chat_template"] = tokenizer.chat_template
    return config


def _label_names(config: dict[str, Any]) -> list[str]:
    """An HF config dict's label names by id (its ``id2label``; keys are ints, or strings after JSON)."""
    id2label = config.get("id2label") or {}
    return [id2label[k] for k in sorted(id2label, key=int)]

