"""``lmforge generate``: the same answers from a LoRA checkpoint, its merged export and its adapter directory,
through the chat template the model was tuned with; files with reference answers are scored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sft_fixtures import bundled_rows, make_base, quiet_trainer, sft_data, sft_model, write_instructions

from lmforge.cli.export import export_checkpoint
from lmforge.cli.main import main
from lmforge.core.data.instruction import DEFAULT_CHAT_TEMPLATE
from lmforge.core.generation import generate_responses

PROMPTS = ["What is 3 plus 4?", "Count the words: pears plums"]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("tuned")
    base = make_base(root / "base", "gpt2")
    files = write_instructions(root / "data")
    model = sft_model(base)
    trainer = quiet_trainer(4)
    trainer.fit(model, datamodule=sft_data(files, base))
    trainer.save_checkpoint(root / "last.ckpt")
    export_checkpoint(root / "last.ckpt", root / "merged")
    export_checkpoint(root / "last.ckpt", root / "adapter", adapter_only=True)
    expected = generate_responses(model.backbone.eval(), model.tokenizer, [[{"role": "user", "content": p}]
                                                                          for p in PROMPTS], DEFAULT_CHAT_TEMPLATE)
    return {"root": root, "base": base, "expected": expected}


@pytest.mark.parametrize("form", ["last.ckpt", "merged", "adapter"])
def test_every_form_of_the_model_gives_the_tuned_models_answers(tuned: dict, form: str, capsys) -> None:
    args = ["generate", str(tuned["root"] / form)]
    for prompt in PROMPTS:
        args += ["--prompt", prompt]
    assert main(args) == 0
    assert capsys.readouterr().out.splitlines() == tuned["expected"]


def test_an_input_file_with_references_is_scored(tuned: dict, tmp_path: Path, capsys) -> None:
    rows = bundled_rows("val", 3)
    rows[1]["messages"][-1]["content"] = "an answer nobody gives"
    path = tmp_path / "val.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "answers.jsonl"
    assert main(["generate", str(tuned["root"] / "merged"), "--input", str(path), "--output", str(out)]) == 0
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in written] == [r["prompt"] for r in rows]
    assert [r["reference"] for r in written] == [r["messages"][-1]["content"] for r in rows]
    assert [r["exact_match"] for r in written] == [r["response"] == r["reference"] for r in written]
    matched = sum(r["exact_match"] for r in written)
    assert f"exact match: {matched}/3" in capsys.readouterr().err


def test_a_plain_text_file_holds_one_prompt_per_line(tuned: dict, tmp_path: Path, capsys) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n\n")
    assert main(["generate", str(tuned["root"] / "adapter"), "--input", str(path)]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["response"] for r in printed] == tuned["expected"]


def test_an_adapter_whose_base_is_gone_asks_for_base(tuned: dict, tmp_path: Path, capsys) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    for f in (tuned["root"] / "adapter").iterdir():
        (adapter / f.name).write_bytes(f.read_bytes())
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    assert main(["generate", str(adapter), "--prompt", "hi"]) == 1
    assert "give the base model's directory with --base DIR" in capsys.readouterr().err
    assert main(["generate", str(adapter), "--prompt", PROMPTS[0], "--base", str(tuned["base"])]) == 0
    assert capsys.readouterr().out.splitlines() == tuned["expected"][:1]


def test_a_lora_checkpoint_refuses_another_base(tuned: dict, tmp_path: Path, capsys) -> None:
    other = make_base(tmp_path / "other", "gpt2", seed=5)
    assert main(["generate", str(tuned["root"] / "last.ckpt"), "--prompt", "hi", "--base", str(other)]) == 1
    assert "adapters only fit the weights they were trained on" in capsys.readouterr().err
