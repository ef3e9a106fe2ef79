"""CausalLM: shifted next-token cross-entropy, against a plain loop and HF GPT-2's own loss."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from lmforge.plugins.objectives.causal_lm import IGNORE_INDEX, CausalLM, causal_lm_loss

B, T, V = 3, 7, 11


def reference_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    """Mean of -log softmax(logits[b, t])[labels[b, t + 1]] over the positions whose next label counts."""
    total, count = 0.0, 0
    for b in range(logits.shape[0]):
        for t in range(logits.shape[1] - 1):
            target = int(labels[b, t + 1])
            if target == IGNORE_INDEX:
                continue
            row = logits[b, t].double()
            total += float(torch.logsumexp(row, 0) - row[target])
            count += 1
    return total / count, count


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(V, (B, T), generator=g), "logits": torch.randn(B, T, V, generator=g) * 3}


def test_loss_is_the_shifted_cross_entropy(batch: dict) -> None:
    loss, count = causal_lm_loss(batch["logits"], batch["input_ids"])
    expected, n = reference_loss(batch["logits"], batch["input_ids"])
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert int(count) == n == B * (T - 1)


def test_loss_matches_hf_gpt2_with_labels() -> None:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=V, n_positions=16, n_embd=16, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    input_ids = torch.randint(V, (B, T), generator=torch.Generator().manual_seed(1))
    objective = CausalLM()
    batch = objective.prepare({"input_ids": input_ids}, torch.Generator())
    with torch.no_grad():
        out = model(input_ids=input_ids, labels=input_ids)
        result = objective.compute(out, batch)
    assert result.loss.item() == pytest.approx(out.loss.item(), rel=1e-5)
    assert result.nll is None and int(result.count) == B * (T - 1)


def test_padding_positions_are_ignored(batch: dict) -> None:
    attention_mask = torch.ones(B, T, dtype=torch.long)
    attention_mask[0, 4:] = 0  # right padding: the last 3 tokens of row 0
    attention_mask[2, 6:] = 0
    input_ids = batch["input_ids"].clone()
    objective = CausalLM()
    prepared = objective.prepare({"input_ids": input_ids, "attention_mask": attention_mask}, torch.Generator())
    assert torch.equal(input_ids, batch["input_ids"])  # the input is not modified in place
    assert torch.equal(prepared["labels"], input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX))

    result = objective.compute(SimpleNamespace(logits=batch["logits"]), prepared)
    # The reference only sees the real tokens of each row.
    total, count = 0.0, 0
    for b, length in enumerate(attention_mask.sum(1).tolist()):
        loss, n = reference_loss(batch["logits"][b:b + 1, :length], input_ids[b:b + 1, :length])
        total, count = total + loss * n, count + n
    assert int(result.count) == count == B * (T - 1) - 3 - 1
    assert result.loss.item() == pytest.approx(total / count, rel=1e-5)
    # Changing what the model predicts at padded targets changes nothing.
    logits = batch["logits"].clone()
    logits[0, 3:] += torch.randn(T - 3, V) * 10
    assert objective.compute(SimpleNamespace(logits=logits), prepared).loss.item() == pytest.approx(result.loss.item())


def test_label_smoothing_reports_the_unsmoothed_nll(batch: dict) -> None:
    prepared = {"input_ids": batch["input_ids"], "labels": batch["input_ids"]}
    outputs = SimpleNamespace(logits=batch["logits"].requires_grad_())
    plain = CausalLM().compute(outputs, prepared)
    smoothed = CausalLM(label_smoothing=0.2).compute(outputs, prepared)
    assert smoothed.nll is not None and not smoothed.nll.requires_grad
    assert smoothed.nll.item() == pytest.approx(plain.loss.item(), rel=1e-6)
    assert smoothed.loss.item() != pytest.approx(plain.loss.item(), rel=1e-3)
    # With smoothing eps the target is (1 - eps) one-hot + eps / V uniform.
    logp = torch.log_softmax(batch["logits"][:, :-1].double(), -1).reshape(-1, V)
    targets = batch["input_ids"][:, 1:].reshape(-1)
    expected = (-(0.8 * logp.gather(1, targets[:, None]).squeeze(1) + 0.2 / V * logp.sum(1))).mean()
    assert smoothed.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_perplexity_is_exp_of_the_mean_token_loss(batch: dict) -> None:
    loss, _ = causal_lm_loss(batch["logits"], batch["input_ids"])
    probs = torch.softmax(batch["logits"].double(), -1)
    next_token_probs = probs[:, :-1].gather(2, batch["input_ids"][:, 1:, None]).reshape(-1)
    # Perplexity is the inverse geometric mean of the probabilities of the true next tokens.
    assert math.exp(loss.item()) == pytest.approx(float(next_token_probs.prod() ** (-1 / len(next_token_probs))), rel=1e-5)


@pytest.mark.parametrize("label_smoothing", [-0.1, 1.0, 1.5])
def test_invalid_label_smoothing_is_refused(label_smoothing: float) -> None:
    with pytest.raises(ValueError, match=r"CausalLM: label_smoothing must be in \[0, 1\)"):
        CausalLM(label_smoothing=label_smoothing)


# -- instruction tuning: the data's labels (responses only) and packed examples -----------------------


def test_labels_the_data_gives_are_kept_and_only_they_are_scored(batch: dict) -> None:
    labels = torch.full((B, T), IGNORE_INDEX)
    labels[:, 4:] = batch["input_ids"][:, 4:]  # a "response" at positions 4..6 of each row
    prepared = CausalLM().prepare({"input_ids": batch["input_ids"], "labels": labels}, torch.Generator())
    assert torch.equal(prepared["labels"], labels)
    result = CausalLM().compute(SimpleNamespace(logits=batch["logits"]), prepared)
    expected, n = reference_loss(batch["logits"], labels)
    assert result.loss.item() == pytest.approx(expected, rel=1e-5) and int(result.count) == n == B * 3
    # Positions 3, 4 and 5 predict the labelled tokens 4, 5 and 6: what R-Drop and distillers compare.
    scored = CausalLM().scored_mask(prepared)
    assert scored.tolist() == [[t in (3, 4, 5) for t in range(T)]] * B
    assert CausalLM().scored_logits(batch["logits"], prepared).shape == (B * 3, V)


def test_packed_examples_lose_as_much_as_each_example_alone() -> None:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=V, n_positions=16, n_embd=16, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    g = torch.Generator().manual_seed(2)
    examples = [torch.randint(1, V, (n,), generator=g) for n in (5, 4, 3)]
    labels = [torch.where(torch.arange(len(e)) >= 2, e, IGNORE_INDEX) for e in examples]  # prompt: 2 tokens
    packed = {"input_ids": torch.cat(examples)[None], "labels": torch.cat(labels)[None],
              "position_ids": torch.cat([torch.arange(len(e)) for e in examples])[None]}
    objective = CausalLM()
    with torch.no_grad():
        inputs = objective.model_inputs(packed)
        assert inputs["attention_mask"].shape == (1, 1, 12, 12)  # block-diagonal, built from the positions
        result = objective.compute(model(**inputs), objective.prepare(packed, torch.Generator()))
        alone = [objective.compute(model(input_ids=e[None]), {"input_ids": e[None], "labels": lab[None]})
                 for e, lab in zip(examples, labels)]
    # Reference: each example's summed response loss on its own, pooled.
    total = sum(float(r.loss) * int(r.count) for r in alone)
    assert int(result.count) == sum(int(r.count) for r in alone) == 3 + 2 + 1
    assert result.loss.item() == pytest.approx(total / int(result.count), rel=1e-5)
