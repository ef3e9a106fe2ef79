"""InstructionEval: val/exact_match is the share of held-out instructions answered exactly, and sample answers go
to samples.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from sft_fixtures import bundled_rows, make_base, quiet_trainer, sft_data, sft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmforge.core.data.instruction import DEFAULT_CHAT_TEMPLATE
from lmforge.core.generation import generate_responses
from lmforge.runtime.observe.instruction_eval import InstructionEval


def test_exact_match_and_samples(tmp_path: Path) -> None:
    base = make_base(tmp_path / "base", "gpt2", seed=0)
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    tokenizer = AutoTokenizer.from_pretrained(base)
    rows = bundled_rows("val", 6)
    answers = generate_responses(model, tokenizer, [r["messages"][:-1] for r in rows], DEFAULT_CHAT_TEMPLATE,
                                 max_new_tokens=8)
    # Every other reference is what the model answers (when it answers anything): a known exact-match rate.
    for i, (row, answer) in enumerate(zip(rows, answers)):
        if i % 2 == 0 and answer:
            row["messages"][-1]["content"] = answer
    expected = sum(a == r["messages"][-1]["content"] for a, r in zip(answers, rows)) / len(rows)
    assert expected > 0
    files = {"train": str(tmp_path / "train.jsonl"), "val": str(tmp_path / "val.jsonl")}
    Path(files["train"]).write_text("".join(json.dumps(r) + "\n" for r in bundled_rows("train", 8)))
    Path(files["val"]).write_text("".join(json.dumps(r) + "\n" for r in rows))

    evaluation = InstructionEval(max_new_tokens=8, batch_size=4, samples=3)
    trainer = quiet_trainer(1, callbacks=[evaluation], limit_val_batches=None,
                            logger=CSVLogger(str(tmp_path / "runs"), name="sft"))
    metrics = trainer.validate(sft_model(base, lora=None), datamodule=sft_data(files, base))[0]
    assert metrics["val/exact_match"] == pytest.approx(expected)
    assert evaluation.exact_match == pytest.approx(expected)
    written = [json.loads(line) for line in (Path(trainer.log_dir) / "samples.jsonl").read_text().splitlines()]
    assert [r["instruction"] for r in written] == [r["prompt"] for r in rows[:3]]
    assert [r["response"] for r in written] == answers[:3]
    assert [r["exact_match"] for r in written] == [a == r["messages"][-1]["content"] for a, r in zip(answers, rows[:3])]


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="InstructionEval: max_new_tokens must be at least 1"):
        InstructionEval(max_new_tokens=0)
    with pytest.raises(ValueError, match="InstructionEval: max_examples must be at least 1"):
        InstructionEval(max_examples=0)


def test_training_mode_is_restored(tmp_path: Path) -> None:
    base = make_base(tmp_path / "base", "gpt2")
    module = sft_model(base)
    module.backbone = AutoModelForCausalLM.from_pretrained(base).train()
    module.tokenizer = AutoTokenizer.from_pretrained(base)
    answers = InstructionEval(max_new_tokens=2).answer(module, [[{"role": "user", "content": "hi"}]],
                                                       DEFAULT_CHAT_TEMPLATE)
    assert len(answers) == 1 and module.backbone.training
    assert torch.is_grad_enabled()


def test_a_prompt_longer_than_the_model_counts_as_a_miss(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    base = make_base(tmp_path / "base", "gpt2")  # 128 positions
    module = sft_model(base)
    module.backbone = AutoModelForCausalLM.from_pretrained(base).eval()
    module.tokenizer = AutoTokenizer.from_pretrained(base)
    questions = [[{"role": "user", "content": "What is 3 plus 4?"}], [{"role": "user", "content": "word " * 200}]]
    short = generate_responses(module.backbone, module.tokenizer, questions[:1], DEFAULT_CHAT_TEMPLATE, max_new_tokens=4)
    with caplog.at_level("WARNING"):
        answers = InstructionEval(max_new_tokens=4).answer_fitting(module, questions, DEFAULT_CHAT_TEMPLATE)
    assert answers == [short[0], ""]
    assert "1 of 2 validation prompts leave no room for an answer in the model's 128 positions" in caplog.text
