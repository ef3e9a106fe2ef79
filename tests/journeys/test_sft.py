"""Instruction tuning with LoRA, in one working directory, as the sft-lora recipe's header says.

    lmforge export <quickstart run>/checkpoints/last.ckpt models/sft-base       (the pre-trained model)
    lmforge fit --config sft-lora ...                                          (LoRA adapters, 6 steps)
    lmforge fit --config sft-lora ... --trainer.max_steps 9 --ckpt_path last          (continues version_0)
    lmforge export runs/sft-lora/version_0/checkpoints/last.ckpt sft-model                  (merged)
    lmforge export runs/sft-lora/version_0/checkpoints/last.ckpt sft-adapter --adapter-only (a peft adapter)
    transformers / peft load both; lmforge generate sft-model --prompt ...

The fixtures run the steps in order, once for the module; each test checks one thing a user relies on.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from journey_kit import (QUICK_LIMIT, STEPS, WARMUP, Journeys, Result, bundled_jsonl, finite, load_checkpoint,
                         metric_values, read_metrics)

#: sft-lora shortened: the quickstart model of the journeys has 64 positions.
FIT = ["fit", "--config", "sft-lora", *STEPS, *WARMUP, "--data.init_args.max_length", "64"]
RESUMED_STEPS = 9  # a validation every 3 steps
PROMPTS = ["What is 3 plus 4?", "Uppercase: tea"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sft")


@pytest.fixture(scope="module")
def run_dir(workdir: Path) -> Path:
    return workdir / "runs" / "sft-lora" / "version_0"


@pytest.fixture(scope="module")
def base(fit_recipe, journeys: Journeys, workdir: Path) -> Path:
    """The quickstart model of the session, exported to models/sft-base, where the recipe looks for it."""
    quickstart = fit_recipe("quickstart")
    quickstart.result.expect_ok()
    journeys.lmforge(["export", str(quickstart.last_ckpt), "models/sft-base"], workdir, limit=QUICK_LIMIT).expect_ok()
    return workdir / "models" / "sft-base"


@pytest.fixture(scope="module")
def fitted(base: Path, journeys: Journeys, workdir: Path, run_dir: Path) -> tuple[Result, dict]:
    result = journeys.lmforge(FIT, workdir)
    return result, load_checkpoint(run_dir / "checkpoints" / "last.ckpt") if result.returncode == 0 else {}


@pytest.fixture(scope="module")
def resumed(fitted, journeys: Journeys, workdir: Path, run_dir: Path) -> Result:
    fitted[0].expect_ok()
    args = [*FIT, "--ckpt_path", "last"]
    args[args.index("--trainer.max_steps") + 1] = str(RESUMED_STEPS)
    return journeys.lmforge(args, workdir)


@pytest.fixture(scope="module")
def exported(resumed: Result, journeys: Journeys, workdir: Path, run_dir: Path) -> dict[str, Path]:
    resumed.expect_ok()
    ckpt = str(run_dir / "checkpoints" / "last.ckpt")
    journeys.lmforge(["export", ckpt, "sft-model"], workdir, limit=QUICK_LIMIT).expect_ok()
    journeys.lmforge(["export", ckpt, "sft-adapter", "--adapter-only"], workdir, limit=QUICK_LIMIT).expect_ok()
    return {"merged": workdir / "sft-model", "adapter": workdir / "sft-adapter"}


# -- fit and resume ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sft_lora_trains_the_adapters_and_scores_answers(fitted, base: Path, run_dir: Path) -> None:
    result, checkpoint = fitted
    result.expect_ok()
    counts = {key: re.search(rf"{key} params: ([\d.]+ ?[KM]?)", result.output) for key in ("Trainable", "Total")}
    assert all(counts.values()), result.explain("the console shows no trainable and total parameter counts")
    rows = read_metrics(run_dir)
    # Lightning logs a validation at the step of the last training batch before it (steps count from 0 there).
    assert [step for step, _ in metric_values(rows, "val/exact_match")] == [2, 5]
    assert all(0.0 <= value <= 1.0 for _, value in metric_values(rows, "val/exact_match"))
    assert all(finite(value) for _, value in metric_values(rows, "val/loss"))
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert samples and {"instruction", "reference", "response", "exact_match"} <= set(samples[0])
    # The checkpoint holds the adapters only (r=16 on every linear layer of a 1-layer, 32-wide model: about a
    # quarter of its weights).
    assert checkpoint["state_dict"] and all(".lora_" in key for key in checkpoint["state_dict"])
    adapter_bytes = sum(v.numel() * v.element_size() for v in checkpoint["state_dict"].values())
    assert adapter_bytes < (base / "model.safetensors").stat().st_size / 2


@pytest.mark.slow
def test_resuming_continues_the_same_run_from_its_step(resumed: Result, run_dir: Path) -> None:
    resumed.expect_ok()
    assert not (run_dir.parent / "version_1").exists()
    rows = read_metrics(run_dir)
    assert [step for step, _ in metric_values(rows, "val/exact_match")] == [2, 5, RESUMED_STEPS - 1]
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == RESUMED_STEPS
    assert all(".lora_" in key for key in checkpoint["state_dict"])


# -- export, load and generate ----------------------------------------------------------------------------------


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                         tokenize=True, return_dict=False)


@pytest.mark.slow
def test_the_merged_model_and_the_adapter_load_offline_with_the_same_logits(exported, base: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = AutoModelForCausalLM.from_pretrained(exported["merged"], local_files_only=True).eval()
    assert not any("lora" in type(m).__name__.lower() for m in merged.modules())  # a plain HF model
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, local_files_only=True),
                                        exported["adapter"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(exported["merged"], local_files_only=True)
    assert tokenizer.chat_template  # the template the model was tuned with travels with it
    ids = torch.tensor([prompt_ids(tokenizer, PROMPTS[0])])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapted(ids).logits, rtol=1e-4, atol=1e-4)
        base_logits = AutoModelForCausalLM.from_pretrained(base, local_files_only=True).eval()(ids).logits
    assert not torch.allclose(merged(ids).logits, base_logits, atol=1e-4)  # the adapters changed the model


@pytest.mark.slow
def test_generate_answers_through_the_chat_template_as_transformers_does(exported, journeys: Journeys,
                                                                         workdir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(exported["merged"], local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(exported["merged"], local_files_only=True)
    expected = []
    for prompt in PROMPTS:  # Reference: greedy decoding by hand up to EOS, from the chat template's prompt.
        ids = prompt_ids(tokenizer, prompt)
        new: list[int] = []
        with torch.no_grad():
            while len(new) < 16:
                token = int(model(torch.tensor([ids + new])).logits[0, -1].argmax())
                if token == tokenizer.eos_token_id:
                    break
                new.append(token)
        expected.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    args = [arg for prompt in PROMPTS for arg in ("--prompt", prompt)]
    for form in ("sft-model", "sft-adapter"):
        out = journeys.lmforge(["generate", form, *args, "--max-new-tokens", "16"], workdir, limit=QUICK_LIMIT)
        assert out.expect_ok().stdout.splitlines() == expected, form


@pytest.mark.slow
def test_generate_scores_a_file_with_reference_answers(exported, journeys: Journeys, workdir: Path) -> None:
    rows = bundled_jsonl("instructions/val.jsonl")[:4]
    (workdir / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = journeys.lmforge(["generate", "sft-model", "--input", "questions.jsonl", "--output", "answers.jsonl",
                            "--max-new-tokens", "16"], workdir, limit=QUICK_LIMIT).expect_ok()
    answers = [json.loads(line) for line in (workdir / "answers.jsonl").read_text().splitlines()]
    assert [a["reference"] for a in answers] == [r["response"] for r in rows]
    matched = sum(a["response"] == a["reference"] for a in answers)
    assert f"exact match: {matched}/4" in out.output
