"""What LanguageModel and TextData log and show: loss terms, gradient norm, named LR groups,
tokens/s in the progress bar, and quiet dataset preparation when the progress bar is off."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger
from tiny import TINY_GPT2, text_data

from lmforge.core.module import LanguageModel
from lmforge.plugins.objectives.causal_lm import CausalLM
from lmforge.runtime.observe.throughput import PROGRESS_BAR_KEY, TokenThroughput


class GradNorms(Callback):
    """The plain 2-norm of all gradients at each optimizer step (callbacks see the grads first)."""

    def __init__(self) -> None:
        self.norms: dict[int, float] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        squares = sum(float(p.grad.double().pow(2).sum()) for p in pl_module.parameters() if p.grad is not None)
        self.norms[trainer.global_step] = squares ** 0.5


def read_columns(path: Path) -> dict[str, dict[int, float]]:
    columns: dict[str, dict[int, float]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if value and key != "step":
                    columns.setdefault(key, {})[int(row["step"])] = float(value)
    return columns


def test_loss_term_grad_norm_lr_groups_and_tokens_per_second(corpus, tmp_path):
    probe, throughput = GradNorms(), TokenThroughput(window_size=2)
    model = LanguageModel(TINY_GPT2, CausalLM(),
                          optimizer={"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3, "weight_decay": 0.1}})
    trainer = Trainer(max_steps=6, accelerator="cpu", logger=CSVLogger(tmp_path, name="run"), log_every_n_steps=2,
                      callbacks=[probe, throughput, LearningRateMonitor(logging_interval="step")],
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      limit_val_batches=0)
    trainer.fit(model, datamodule=text_data(corpus, tmp_path / "cache"))
    columns = read_columns(Path(trainer.logger.log_dir) / "metrics.csv")
    # The objective's term is logged even when it is the only one.
    assert columns["loss/causal_lm"] == columns["loss/total"]
    # The gradient norm only at logging steps, equal to the plain norm of that step's gradients.
    assert sorted(columns["metric/grad_norm"]) == sorted(columns["loss/total"]) == [1, 3, 5]
    for step, norm in columns["metric/grad_norm"].items():
        assert norm == pytest.approx(probe.norms[step], rel=1e-5)
    assert len(probe.norms) == 6
    # Named parameter groups name the learning-rate columns.
    assert [g["name"] for g in trainer.optimizers[0].param_groups] == ["decay", "no_decay"]
    assert {"lr-AdamW/decay", "lr-AdamW/no_decay"} <= set(columns)
    # Tokens/s reaches the progress bar, rounded, and only the progress bar.
    last = columns["train/device/items_per_sec"][max(columns["train/device/items_per_sec"])]
    assert trainer.progress_bar_metrics[PROGRESS_BAR_KEY] == round(last)
    assert PROGRESS_BAR_KEY not in columns


@pytest.mark.parametrize("progress_bar", [True, False])
def test_dataset_preparation_is_quiet_without_a_progress_bar(corpus, tmp_path, monkeypatch, progress_bar):
    seen = []
    data = text_data(corpus, tmp_path / "cache")
    monkeypatch.setattr(data, "_build", lambda: seen.append(datasets.is_progress_bar_enabled()))
    data.trainer = SimpleNamespace(progress_bar_callback=object() if progress_bar else None, logger=None)
    assert datasets.is_progress_bar_enabled()
    data.prepare_data()
    data.setup("validate")
    assert seen == [progress_bar, progress_bar]
    assert datasets.is_progress_bar_enabled()  # switched back on for whatever runs next


def test_gradient_norm_matches_clip_grad_norm():
    from lmforge.core.module import gradient_norm

    grads = [torch.randn(3, 4), torch.randn(5)]
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    assert float(gradient_norm(grads)) == pytest.approx(float(torch.nn.utils.clip_grad_norm_(params, 1e9)))
