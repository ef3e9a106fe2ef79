"""LoRA through peft on tiny gpt2 and llama models: only adapters train, the base stays bitwise unchanged,
merging keeps the logits, a saved adapter directory loads with peft offline, and errors name the recipe key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

from lmforge.core.lora import (
    LoraSpec,
    adapter_state_dict,
    apply_lora,
    head_modules,
    load_adapter_state_dict,
    merge_lora,
    parameter_counts,
    save_adapter,
)

VOCAB, HIDDEN, LAYERS, R = 50, 32, 2, 4
CAUSAL = "AutoModelForCausalLM"
#: Per architecture: the config and, for the default targets, each adapted layer's (in, out) features.
ARCHS = {
    "gpt2": (dict(model_type="gpt2", n_layer=LAYERS, n_embd=HIDDEN, n_head=4, n_positions=32, vocab_size=VOCAB,
                  bos_token_id=0, eos_token_id=0),
             [(HIDDEN, 3 * HIDDEN)]),  # c_attn
    "llama": (dict(model_type="llama", num_hidden_layers=LAYERS, hidden_size=HIDDEN, intermediate_size=64,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32, vocab_size=VOCAB,
                   bos_token_id=0, eos_token_id=0, pad_token_id=0),
              [(HIDDEN, HIDDEN), (HIDDEN, HIDDEN // 2)]),  # q_proj, v_proj (2 of 4 heads' keys and values)
}


def tiny(arch: str, seed: int = 0) -> AutoModelForCausalLM:
    settings = dict(ARCHS[arch][0])
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(settings.pop("model_type"), **settings))


def train_steps(model: torch.nn.Module, steps: int = 5) -> None:
    """A few AdamW steps with weight decay, given every parameter: a frozen one must get no gradient, or the
    step (decay included) would move it."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-2, weight_decay=0.1)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        ids = torch.randint(1, VOCAB, (4, 12), generator=generator)
        model(ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def logits(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.arange(1, 13).reshape(2, 6)
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_only_the_adapters_require_grad_and_are_counted(arch: str) -> None:
    model = tiny(arch)
    total_before = sum(p.numel() for p in model.parameters())
    apply_lora(model, LoraSpec(r=R, alpha=8), CAUSAL)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    # Reference: each adapted layer adds A (r x in) and B (out x r).
    adapter = LAYERS * sum(R * (fan_in + fan_out) for fan_in, fan_out in ARCHS[arch][1])
    assert parameter_counts(model) == (adapter, total_before + adapter)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_training_leaves_the_base_weights_bitwise_unchanged(arch: str) -> None:
    model = tiny(arch)
    apply_lora(model, LoraSpec(r=R, alpha=8, dropout=0.1), CAUSAL)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_steps(model)
    after = dict(model.named_parameters())
    base = [n for n in before if ".lora_" not in n]
    assert base and all(torch.equal(before[n], after[n]) for n in base)
    assert all(not torch.equal(before[n], after[n]) for n in before if ".lora_B." in n)  # B starts at 0 and moved


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_merging_keeps_the_logits_and_leaves_a_plain_model(arch: str) -> None:
    model = tiny(arch)
    apply_lora(model, LoraSpec(r=R, alpha=8), CAUSAL)
    train_steps(model)
    adapted = logits(model)
    assert (adapted - logits(tiny(arch))).abs().max() > 1e-3  # the adapters changed the model
    merged = merge_lora(model)
    torch.testing.assert_close(logits(merged), adapted, rtol=1e-5, atol=1e-5)
    assert merged.state_dict().keys() == tiny(arch).state_dict().keys()  # a plain HF model's weights
    assert not any("lora" in type(m).__name__.lower() for m in merged.modules())


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_a_saved_adapter_loads_with_peft_offline(arch: str, tmp_path: Path) -> None:
    base = tiny(arch)
    base.save_pretrained(str(tmp_path / "base"))
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "base"), local_files_only=True)
    spec = LoraSpec(r=R, alpha=8, target_modules=["c_attn", "c_fc"] if arch == "gpt2" else r".*\.(q|k|v|o)_proj")
    apply_lora(model, spec, CAUSAL)
    train_steps(model)
    save_adapter(model, spec, tmp_path / "adapter", CAUSAL, base_model=str(tmp_path / "base"))
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["task_type"] == "CAUSAL_LM" and config["r"] == R

    fresh = AutoModelForCausalLM.from_pretrained(str(tmp_path / "base"), local_files_only=True)
    loaded = PeftModel.from_pretrained(fresh, str(tmp_path / "adapter"), local_files_only=True).eval()
    torch.testing.assert_close(logits(loaded), logits(model), rtol=1e-5, atol=1e-5)


def test_adapter_state_dict_round_trips_into_a_fresh_model() -> None:
    spec = LoraSpec(r=R, alpha=8)
    trained = apply_lora(tiny("llama"), spec, CAUSAL)
    train_steps(trained)
    state = adapter_state_dict(trained)
    assert state and all(".lora_" in k for k in state)
    fresh = apply_lora(tiny("llama"), spec, CAUSAL)
    load_adapter_state_dict(fresh, state)
    torch.testing.assert_close(logits(fresh), logits(trained), rtol=0, atol=0)
    with pytest.raises(ValueError, match="model.backbone.lora: the adapter weights do not fit"):
        load_adapter_state_dict(apply_lora(tiny("llama"), LoraSpec(r=R, target_modules=["k_proj"])), state)


def test_modules_to_save_train_in_full_and_merge_as_their_trained_copy() -> None:
    config = AutoConfig.for_model("llama", num_hidden_layers=1, hidden_size=HIDDEN, intermediate_size=64,
                                  num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB, pad_token_id=0,
                                  num_labels=3)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    head_before = model.score.weight.detach().clone()
    apply_lora(model, LoraSpec(r=R, target_modules=["q_proj"], modules_to_save=["score"]),
               "AutoModelForSequenceClassification")
    assert {n for n, p in model.named_parameters() if p.requires_grad and "lora" not in n} == \
        {"score.modules_to_save.default.weight"}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    ids = torch.randint(1, VOCAB, (4, 6), generator=torch.Generator().manual_seed(0))
    model(ids, labels=torch.tensor([0, 1, 2, 1])).loss.backward()
    optimizer.step()
    with torch.no_grad():
        expected = model(ids).logits
    merge_lora(model)
    assert not torch.equal(model.score.weight, head_before)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, expected, rtol=1e-5, atol=1e-5)


def test_a_tied_output_layer_trains_as_one_matrix_with_the_input_embeddings() -> None:
    model = tiny("gpt2")
    original = model.transformer.wte.weight.detach().clone()
    apply_lora(model, LoraSpec(r=R, alpha=8, target_modules=["c_attn"], modules_to_save=["lm_head"]), CAUSAL)
    train_steps(model)
    ids = torch.arange(1, 13).reshape(2, 6)
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    # By hand: the last hidden states (after ln_f) times the trained input embedding matrix.
    embedding = model.get_input_embeddings()(torch.arange(VOCAB))  # the trained copy's rows, read as the input does
    assert not torch.equal(embedding, original)
    torch.testing.assert_close(out.logits, out.hidden_states[-1] @ embedding.T, rtol=1e-5, atol=1e-5)
    merged = merge_lora(model)
    assert merged.lm_head.weight is merged.transformer.wte.weight
    torch.testing.assert_close(logits(merged), out.logits, rtol=1e-5, atol=1e-5)


def test_naming_the_tied_input_embeddings_is_refused_naming_the_output_layer() -> None:
    with pytest.raises(ValueError, match=r"modules_to_save: \['wte'\] are the input embeddings.*\[lm_head\]"):
        apply_lora(tiny("gpt2"), LoraSpec(r=R, target_modules=["c_attn"], modules_to_save=["wte"]), CAUSAL)


def test_head_modules_are_the_new_heads_of_classifiers() -> None:
    from transformers import AutoModelForTokenClassification

    llama = AutoConfig.for_model("llama", num_hidden_layers=1, hidden_size=HIDDEN, intermediate_size=64,
                                 num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB, num_labels=3)
    bert = AutoConfig.for_model("bert", num_hidden_layers=1, hidden_size=HIDDEN, intermediate_size=64,
                                num_attention_heads=4, vocab_size=VOCAB, num_labels=5)
    assert head_modules(AutoModelForSequenceClassification.from_config(llama)) == ["score"]
    assert head_modules(AutoModelForTokenClassification.from_config(bert)) == ["classifier"]  # not its dropout
    assert head_modules(tiny("gpt2")) == ["lm_head"]


@pytest.mark.parametrize("target", [["nope"], r".*\.nope"])
def test_a_target_that_matches_nothing_names_the_key_and_the_layers(target) -> None:
    with pytest.raises(ValueError, match=r"model.backbone.lora.target_modules: .* matches no layer of "
                                         r"GPT2LMHeadModel; its adaptable layers are named \[.*'c_attn'"):
        apply_lora(tiny("gpt2"), LoraSpec(target_modules=target))


@pytest.mark.parametrize("settings, message", [
    (dict(r=0), "lora.r must be at least 1"),
    (dict(alpha=0), "lora.alpha must be positive"),
    (dict(dropout=1.0), r"lora.dropout must be in \[0, 1\)"),
    (dict(target_modules=[]), "must name at least one module"),
    (dict(target_modules="(unclosed"), "not a valid regular expression"),
])
def test_bad_specs_are_refused_naming_the_key(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LoraSpec(**settings)
