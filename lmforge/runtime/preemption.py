"""Save a checkpoint when the run is preempted (SIGTERM), so `fit --ckpt_path last` continues it.

Lightning catches SIGTERM, finishes the current batch on every rank and raises ``SIGTERMException``; it
saves nothing by itself. This callback writes ``last.ckpt`` into the ``ModelCheckpoint`` directory then, and
``lmforge fit`` exits with status 143 (128 + SIGTERM), the code schedulers requeue (`lmforge.cli.training`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class SaveOnPreemption(Callback):
    """On SIGTERM (cluster preemption, ``scancel``, ``kill``), save ``last.ckpt`` before the process exits."""

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        checkpoint = trainer.checkpoint_callback
        if not isinstance(checkpoint, ModelCheckpoint) or checkpoint.dirpath is None:
            log.warning("SIGTERM at step %d: no ModelCheckpoint callback, so no checkpoint was saved.",
                        trainer.global_step)
            return
        path = Path(checkpoint.dirpath) / f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}"
        # Every rank calls it: sharded strategies write their own shards. The full state: the run continues from it.
        trainer.save_checkpoint(path, weights_only=False)
        log.warning("SIGTERM at step %d: saved %s; the same command with --ckpt_path last continues this run "
                    "(exit status 143: requeue)", trainer.global_step, path)
