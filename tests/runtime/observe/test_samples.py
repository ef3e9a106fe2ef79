"""ValidationSamples against plain greedy decoding and plain masked-token argmax."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import transformers

from lmforge.core.data.tokenizer import TokenizerTraining, train_tokenizer
from lmforge.runtime.observe.samples import MASK, ValidationSamples

TEXT = ["the cat sat on the mat and the dog ran to the park while birds sang in tall green trees"] * 50


@pytest.fixture(scope="module")
def causal():
    tokenizer = train_tokenizer([TEXT], TokenizerTraining(vocab_size=300), "bpe")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_embd=32, n_head=2, n_positions=64,
                                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                     pad_token_id=tokenizer.pad_token_id)
    backbone = transformers.GPT2LMHeadModel(config).eval()
    return SimpleNamespace(backbone=backbone, tokenizer=tokenizer,
                           objective=SimpleNamespace(auto_model="AutoModelForCausalLM"))


@pytest.fixture(scope="module")
def masked():
    tokenizer = train_tokenizer([TEXT], TokenizerTraining(vocab_size=100), "wordpiece")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(tokenizer), num_hidden_layers=1, hidden_size=32,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                                     pad_token_id=tokenizer.pad_token_id)
    backbone = transformers.BertForMaskedLM(config).eval()
    return SimpleNamespace(backbone=backbone, tokenizer=tokenizer,
                           objective=SimpleNamespace(auto_model="AutoModelForMaskedLM"))


def samples_of(module, **kwargs):
    callback = ValidationSamples(**kwargs)
    callback.setup(None, module, "fit")
    return callback.samples(module)


def greedy(module, prompt: str, n: int) -> str:
    tok = module.tokenizer
    ids = [tok.bos_token_id, *tok(prompt, add_special_tokens=False)["input_ids"]]
    start = len(ids)
    with torch.no_grad():
        for _ in range(n):
            next_id = int(module.backbone(torch.tensor([ids])).logits[0, -1].argmax())
            ids.append(next_id)
            if next_id == tok.eos_token_id:
                break
    return tok.decode(ids[start:], skip_special_tokens=True)


def test_causal_samples_are_greedy_continuations_of_each_prompt(causal):
    rows = samples_of(causal, prompts=["the cat sat", "birds sang in"], max_new_tokens=6)
    assert [r["prompt"] for r in rows] == ["the cat sat", "birds sang in"]
    assert [r["completion"] for r in rows] == [greedy(causal, "the cat sat", 6), greedy(causal, "birds sang in", 6)]


def test_sampling_is_seeded_and_leaves_the_training_rng_alone(causal):
    state = torch.get_rng_state()
    first = samples_of(causal, prompts=["the dog"], do_sample=True, seed=3, max_new_tokens=8)
    assert torch.equal(torch.get_rng_state(), state)
    assert samples_of(causal, prompts=["the dog"], do_sample=True, seed=3, max_new_tokens=8) == first
    # ... and the seed is what decides: another seed samples other tokens (8 tokens from ~300, untrained)
    assert samples_of(causal, prompts=["the dog"], do_sample=True, seed=4, max_new_tokens=8) != first
    assert causal.backbone.training is False


def test_masked_samples_fill_each_mask_with_its_most_likely_token(masked):
    prompt = f"the {MASK} sat on the {MASK}."
    (row,) = samples_of(masked, prompts=[prompt], top_k=2)
    tok = masked.tokenizer
    encoded = tok(prompt.replace(MASK, tok.mask_token), return_tensors="pt")
    with torch.no_grad():
        probs = masked.backbone(**encoded).logits[0].softmax(-1)
    ids = encoded["input_ids"][0].clone()
    positions = [i for i, t in enumerate(ids.tolist()) if t == tok.mask_token_id]
    assert len(positions) == 2
    top = [probs[i].topk(2) for i in positions]
    for i, t in zip(positions, top):
        ids[i] = t.indices[0]
    assert row["filled"] == tok.decode(ids.tolist(), skip_special_tokens=True)
    expected = " | ".join(", ".join(f"{tok.decode([int(j)]).strip()} {float(p):.3f}" for p, j in zip(t.values, t.indices))
                          for t in top)
    assert row["candidates"] == expected


def test_masked_prompts_must_mark_a_mask(masked):
    with pytest.raises(ValueError, match=r"ValidationSamples: every prompt .* must contain \{mask\}, got 'no mask'"):
        samples_of(masked, prompts=["no mask"])


def test_default_prompts_per_kind(causal, masked):
    assert len(samples_of(causal, max_new_tokens=2)) == 3
    assert all(MASK not in r["filled"] for r in samples_of(masked))


def test_other_objectives_log_no_samples():
    callback = ValidationSamples()
    callback.setup(None, SimpleNamespace(objective=SimpleNamespace(auto_model="AutoModelForSequenceClassification")),
                   "fit")
    assert callback.kind is None


def test_run_keeps_samples_as_json_lines_aligned_with_validation(observed_run):
    rows = [json.loads(line) for line in (observed_run.runs[0] / "samples.jsonl").read_text().splitlines()]
    val_steps = [step for step, _ in observed_run.csv_series(0, "val/loss")]
    assert sorted({r["step"] for r in rows}) == val_steps
    assert all(set(r) == {"step", "prompt", "completion"} for r in rows)
