"""A test-only Lightning callback that the journeys add to a recipe's callbacks.

    lmforge fit --config quickstart --trainer.callbacks+=journey_probe.JourneyProbe

The journeys put this folder on PYTHONPATH. On every rank, the callback writes
``$JOURNEY_PROBE_DIR/<stage>-rank<N>.json`` (default ``./journey-probe``):

- at the first training batch, how many modules of each top-level child of the
  LightningModule are in eval mode, how many dropout layers are active, and
  per-parameter sums of the weights the run starts from, and the state of
  Python's garbage collector (on, and how many objects start-up froze);
- at the end of training, the last training loss of this rank, the global
  step, and a SHA-256 digest of every parameter's full value (sharded DTensor
  parameters are gathered with ``full_tensor()``, a collective every rank
  runs), so that a test can check that all ranks end with the same weights.

``JOURNEY_STEP_SLEEP`` (seconds) slows every training batch, so that a test can
send a signal while a run is still training.

It uses Lightning's and torch's public APIs only.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

DROPOUT_TYPES = (torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.Dropout3d)


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole value of a parameter, gathered from every rank when it is a sharded DTensor."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch without DTensor: nothing is sharded
        return tensor.detach()
    if isinstance(tensor, DTensor):
        return tensor.full_tensor().detach()
    return tensor.detach()


def _loss(outputs: Any) -> float | None:
    if isinstance(outputs, dict):
        outputs = outputs.get("loss")
    if isinstance(outputs, torch.Tensor):
        return float(outputs.detach().float().cpu())
    return None


class JourneyProbe(Callback):
    """Records each rank's module modes at the first training batch, and its last loss and weights digest."""

    def __init__(self) -> None:
        self.out_dir = Path(os.environ.get("JOURNEY_PROBE_DIR", "journey-probe"))
        self.sleep = float(os.environ.get("JOURNEY_STEP_SLEEP", "0") or 0)
        self.first_batch_seen = False
        self.last_loss: float | None = None
        self.losses: list[float] = []

    def _write(self, trainer: Trainer, stage: str, record: dict[str, Any]) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record = {"rank": trainer.global_rank, "world_size": trainer.world_size, **record}
        path = self.out_dir / f"{stage}-rank{trainer.global_rank}.json"
        path.write_text(json.dumps(record, indent=1, sort_keys=True), encoding="utf-8")

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        if self.sleep:
            time.sleep(self.sleep)
        if self.first_batch_seen:
            return
        self.first_batch_seen = True
        children: dict[str, dict[str, int]] = {}
        for name, child in pl_module.named_children():
            modules = list(child.modules())
            dropouts = [m for m in modules if isinstance(m, DROPOUT_TYPES)]
            children[name] = {
                "modules": len(modules),
                "eval_modules": sum(not m.training for m in modules),
                "dropouts": len(dropouts),
                "active_dropouts": sum(m.training for m in dropouts),
            }
        # name -> [sum, shape] of the weights training starts from
        start = {}
        for name, p in pl_module.named_parameters():
            full = _full(p)
            start[name] = [float(full.double().sum()), list(full.shape)]
        collector = {"enabled": gc.isenabled(), "frozen": gc.get_freeze_count()}
        self._write(trainer, "start", {"global_step": trainer.global_step, "children": children, "params": start,
                                       "gc": collector})

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = _loss(outputs)
        if loss is not None:
            self.last_loss = loss
            self.losses.append(loss)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        digest = hashlib.sha256()
        shapes = {}
        for name, p in sorted(pl_module.named_parameters(), key=lambda item: item[0]):
            full = _full(p).float().cpu().contiguous()
            digest.update(name.encode())
            digest.update(full.numpy().tobytes())
            shapes[name] = list(full.shape)
        self._write(trainer, "end", {"global_step": trainer.global_step, "last_loss": self.last_loss,
                                     "losses": self.losses, "weights_sha256": digest.hexdigest(),
                                     "shapes": shapes})
