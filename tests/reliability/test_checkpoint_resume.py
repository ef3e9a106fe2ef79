"""Resuming from an lmforge checkpoint needs nothing but tensors and plain values (``weights_only=True``),
and restores the optimizer, the learning-rate schedule, the callbacks and the loop counters.

`tiny_run` fits the tiny recipe for 4 steps and resumes it to 6 through the CLI, spying on ``torch.load``.
"""

from __future__ import annotations

import torch
import yaml


def test_the_cli_resumes_with_weights_only_true(tiny_run) -> None:
    assert tiny_run.loads, "the resume loaded no checkpoint"
    assert all(kwargs.get("weights_only") is True for kwargs in tiny_run.loads), tiny_run.loads
    recorded = yaml.safe_load((tiny_run.resumed / "config.yaml").read_text())
    assert recorded["weights_only"] is True  # the default, written down in the run's record


def test_a_checkpoint_loads_with_weights_only_and_holds_the_whole_training_state(tiny_run) -> None:
    checkpoint = torch.load(tiny_run.fit / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert {"state_dict", "optimizer_states", "lr_schedulers", "callbacks", "loops", "hyper_parameters",
            "lmforge"} <= set(checkpoint)
    assert checkpoint["global_step"] == 4


def test_resuming_continues_the_optimizer_schedule_and_step_count(tiny_run) -> None:
    before = torch.load(tiny_run.fit / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    after = torch.load(tiny_run.resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert after["global_step"] == 6
    # AdamW counts its own steps: 6 only if the resumed run started from the checkpoint's state (4), not from 0.
    steps = {float(s["step"]) for s in after["optimizer_states"][0]["state"].values()}
    assert steps == {6.0} and {float(s["step"]) for s in before["optimizer_states"][0]["state"].values()} == {4.0}
    assert after["lr_schedulers"][0]["last_epoch"] == 6
    checkpoint_state = next(v for k, v in after["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert checkpoint_state["last_model_path"].endswith("version_1/checkpoints/last.ckpt")
