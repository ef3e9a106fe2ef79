"""The sft-lora recipe runs a few steps from local gpt2 and llama models built from configs, as its header says:
``lmforge fit --config sft-lora --model.backbone.pretrained DIR --data.init_args.tokenizer.path DIR``."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sft_fixtures import make_base

from lmforge.cli.main import main

FAST = ["--trainer.max_steps", "4", "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "2",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--data.init_args.batch_size", "8"]


@pytest.fixture(autouse=True)
def no_argv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "argv", ["lmforge"])
    monkeypatch.chdir(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_sft_lora_trains_adapters_on_a_local_model(arch: str, tmp_path: Path) -> None:
    base = make_base(tmp_path / "base", arch)
    assert main(["fit", "--config", "sft-lora", *FAST, "--model.backbone.pretrained", str(base),
                 "--data.init_args.tokenizer.path", str(base)]) == 0
    run = tmp_path / "runs" / "sft-lora" / "version_0"
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    exact = [float(r["val/exact_match"]) for r in rows if r.get("val/exact_match")]
    assert len(exact) == 2 and all(0.0 <= e <= 1.0 for e in exact)
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    # all-linear: every linear layer of the blocks gets adapters, the output head none.
    assert state and all(".lora_A." in k or ".lora_B." in k for k in state)
    assert not any("lm_head" in k for k in state)
    assert main(["export", str(run / "checkpoints" / "last.ckpt"), "merged"]) == 0
    merged, saved = load_file("merged/model.safetensors"), load_file(str(base / "model.safetensors"))
    assert merged.keys() == saved.keys()
    assert any(not torch.equal(merged[k], saved[k]) for k in saved)  # the adapters are folded in
