"""The two-step distillation flow through the CLI: pretrain a teacher, distil a student, export it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from lmforge.cli.main import main

SHORT = ["--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1",
         "--trainer.enable_progress_bar", "false", "--data.init_args.batch_size", "2",
         "--data.init_args.block_size", "32"]


@pytest.mark.slow
@pytest.mark.parametrize("objective, auto", [("clm", "AutoModelForCausalLM"), ("mlm", "AutoModelForMaskedLM")])
def test_pretrain_then_distill_then_export(objective: str, auto: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lmforge"])
    assert main(["fit", "--config", f"{objective}-pretrain", *SHORT,
                 "--data.init_args.tokenizer.train.vocab_size", "300"]) == 0
    teacher_ckpt = tmp_path / "runs" / f"{objective}-pretrain" / "version_0" / "checkpoints" / "last.ckpt"
    assert teacher_ckpt.is_file()

    assert main(["fit", "--config", f"distill-{objective}", *SHORT]) == 0  # the recipe's default paths
    student_ckpt = tmp_path / "runs" / f"distill-{objective}" / "version_0" / "checkpoints" / "last.ckpt"
    state = torch.load(student_ckpt, map_location="cpu", weights_only=True)
    assert state["lmforge"]["config"]["num_hidden_layers" if objective == "mlm" else "n_layer"] == 2
    teacher_state = torch.load(teacher_ckpt, map_location="cpu", weights_only=True)["state_dict"]
    n_teacher = sum(v.numel() for v in teacher_state.values())
    assert sum(v.numel() for v in state["state_dict"].values()) < n_teacher  # no teacher inside

    assert main(["export", str(student_ckpt), str(tmp_path / "student")]) == 0
    student = getattr(transformers, auto).from_pretrained(tmp_path / "student", local_files_only=True)
    assert student.config.num_hidden_layers == 2
