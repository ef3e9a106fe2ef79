"""Training throughput: tokens/s, samples/s, FLOPs/s and model FLOPs utilization.

`TokenThroughput` is Lightning's ``ThroughputMonitor`` set up for token
batches: a batch's samples are ``input_ids.shape[0]`` and its tokens
``input_ids.numel()`` (every position, padding included). Its FLOPs per batch
are *measured*, not estimated: `batch_flops` runs one forward and backward
pass of a meta-device copy of the backbone on the batch's shape under
``torch.utils.flop_counter.FlopCounterMode`` (Lightning's ``measure_flops``),
which counts every matmul, attention included, and costs no real compute.
Plugin work (a distillation teacher, R-Drop's second pass) is not counted:
MFU is the *model's* FLOPs over the device's peak.

Logged under Lightning's names at the trainer's logging steps, once the
rolling window is full: ``train/device/items_per_sec`` (tokens/s),
``train/device/samples_per_sec``, ``train/device/batches_per_sec``,
``train/device/flops_per_sec``, ``train/device/mfu`` (on devices whose peak
Lightning knows, i.e. not on CPU), totals over all devices without
``device/`` when there is more than one, and the running counts
``train/time``, ``train/samples``, ``train/lengths``, ``train/batches``.
Tokens/s also goes to the progress bar as ``tokens/s`` (all devices together when there are several).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from lightning.fabric.utilities.throughput import measure_flops
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ThroughputMonitor
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch import nn

log = logging.getLogger(__name__)

PROGRESS_BAR_KEY = "tokens/s"


def batch_size(batch: dict[str, torch.Tensor]) -> int:
    return int(batch["input_ids"].shape[0])


def batch_tokens(batch: dict[str, torch.Tensor]) -> int:
    return int(batch["input_ids"].numel())


def batch_flops(backbone: nn.Module, shape: tuple[int, ...]) -> int:
    """FLOPs of one training step (forward + backward) of ``backbone`` on ``input_ids`` of ``shape``.

    Measured on a meta-device copy built from the backbone's class and config, so the real model
    (compiled, sharded or on a GPU) is untouched and nothing is computed.
    """
    config = copy.deepcopy(backbone.config)
    # Without a pad token and a mask, HF never reads the (meta) ids to look for padding; same FLOPs.
    config.pad_token_id = None
    with torch.device("meta"):
        model = _model_class(backbone)(config)
        input_ids = torch.zeros(shape, dtype=torch.long)

    def forward() -> torch.Tensor:
        out = model(input_ids=input_ids)
        return out.logits if hasattr(out, "logits") else out[0]

    return measure_flops(model, forward, loss_fn=torch.Tensor.sum)


def _model_class(backbone: nn.Module) -> type:
    """The backbone's own class, beneath wrappers that FSDP2's ``fully_shard`` adds."""
    for cls in type(backbone).__mro__:
        if not cls.__module__.startswith("torch.") and hasattr(cls, "config_class"):
            return cls
    return type(backbone)


class TokenThroughput(ThroughputMonitor):
    """Tokens/s, samples/s and model FLOPs utilization (MFU) of training.

    Args:
        window_size: Batches in the rolling average; nothing is logged until
            this many training batches have run.
        prog_bar: Show tokens/s in the progress bar.
    """

    def __init__(self, window_size: int = 20, prog_bar: bool = True) -> None:
        super().__init__(batch_size_fn=batch_size, length_fn=batch_tokens, window_size=window_size)
        self.prog_bar = prog_bar
        self._flops: dict[tuple[int, ...], int | None] = {}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # Measured per batch shape when training (below); none in validation and testing, where ThroughputMonitor
        # would otherwise warn that the module defines no `flops_per_batch`.
        if not hasattr(pl_module, "flops_per_batch"):
            pl_module.flops_per_batch = None

    @rank_zero_only
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        # ThroughputMonitor reads the module's `flops_per_batch`; it depends on the batch's shape.
        shape = tuple(batch["input_ids"].shape)
        if shape not in self._flops:
            self._flops[shape] = self._measure(pl_module, shape)
        pl_module.flops_per_batch = self._flops[shape]

    def _measure(self, pl_module: LightningModule, shape: tuple[int, ...]) -> int | None:
        backbone = getattr(pl_module, "backbone", None)
        try:
            return batch_flops(backbone, shape)
        except Exception as exc:  # a model that cannot run on the meta device: log throughput without FLOPs
            log.warning("TokenThroughput: could not measure the FLOPs of %s (%s: %s); FLOPs/s and MFU are not "
                        "logged.", type(backbone).__name__, type(exc).__name__, exc)
            return None

    def _compute(self, trainer: Trainer, iter_num: int | None = None) -> None:
        # Unlike ThroughputMonitor, log training throughput only: Lightning logs validation throughput at the
        # validation batch index as the step (which breaks the step axis of CSV logs and plots) and with the
        # training step's FLOPs. Validation batches are still timed, so that validation time is not counted
        # as training time.
        if trainer.state.stage != RunningStage.TRAINING or not trainer._logger_connector.should_update_logs:
            return
        throughput = self._throughputs[RunningStage.TRAINING]
        metrics = {f"train{throughput.separator}{k}": v for k, v in throughput.compute().items()}
        trainer._logger_connector.log_metrics(metrics, step=iter_num)
        sep = throughput.separator
        # All devices together when there are several, else the one device's rate.
        tokens_per_sec = metrics.get(f"train{sep}items_per_sec", metrics.get(f"train{sep}device{sep}items_per_sec"))
        if self.prog_bar and tokens_per_sec is not None:
            trainer.lightning_module.log(PROGRESS_BAR_KEY, round(tokens_per_sec), prog_bar=True, logger=False)
