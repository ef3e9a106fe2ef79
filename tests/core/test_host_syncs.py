"""No tensor is read on the host during a training step that is not a logging step.

On a GPU a host read (``Tensor.item``, ``bool(tensor)``, ``.cpu()``, ``.tolist()``, ``.numpy()``) waits for every
queued kernel, so the host can no longer run ahead of the device. The quickstart recipe, as ``lmforge fit`` builds
it (its logger, progress bar and callbacks), trains a few steps while every such read is counted; the steps that
are not logging steps must read nothing. The non-finite guard skips a bad update on the device
(``optimizer.found_inf``) and is read at logging steps (tests/reliability/test_numeric_faults.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from lmforge.cli.recipes import bundled_recipes
from lmforge.cli.training import run_cli

LOG_EVERY = 4
READS = ("item", "__bool__", "cpu", "tolist", "numpy")


class CountHostReads(Callback):
    """Counts the reads from each non-logging step's start to the next step's start, by step."""

    def __init__(self) -> None:
        self.reads: dict[int, list[str]] = {}
        self.steps: list[int] = []
        self._step: int | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._step = None if (trainer.global_step + 1) % trainer.log_every_n_steps == 0 else trainer.global_step
        if self._step is not None:
            self.reads[self._step] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._step is not None:
            self.steps.append(self._step)

    def on_train_end(self, trainer, pl_module) -> None:
        self._step = None

    def read(self, name: str) -> None:
        if self._step is not None:
            self.reads[self._step].append(name)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> CountHostReads:
    counter = CountHostReads()
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, __original=original, __name=name, **kwargs):
            counter.read(__name)
            return __original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    return counter


def test_training_steps_that_do_not_log_read_nothing_on_the_host(
        counted: CountHostReads, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["lmforge"])
    cli = run_cli(["--config", str(bundled_recipes()["quickstart"]), "--trainer.max_steps", "13",
                   "--trainer.log_every_n_steps", str(LOG_EVERY), "--trainer.val_check_interval", "100",
                   "--data.init_args.batch_size", "4", "--data.init_args.block_size", "32",
                   "--data.init_args.tokenizer.train.vocab_size", "300"], run=False)
    names = [type(c).__name__ for c in cli.trainer.callbacks]
    assert {"ModelCheckpoint", "TokenThroughput", "LearningRateMonitor"} <= set(names), names
    assert cli.trainer.progress_bar_callback is not None, names
    assert cli.trainer.loggers, "the recipe's CSV logger"
    cli.trainer.callbacks.insert(0, counted)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)

    assert cli.trainer.global_step == 13
    # Step 0 builds what the run keeps (FLOPs, generator, flags); the last step's window runs into the end of fit
    # (the final checks and checkpoint), which reads the loss on purpose.
    quiet = [s for s in counted.steps if 0 < s < cli.trainer.global_step - 1]
    assert len(quiet) >= 8
    assert {s: counted.reads[s] for s in quiet if counted.reads[s]} == {}
