"""TokenNoise on the device: about the advertised share of non-special tokens, special tokens never,
fresh every step, seeded; deletion keeps shapes and pads the end."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lmforge.core.data.tokenizer import TokenizerTraining, train_tokenizer
from lmforge.plugins.augmenters.token_noise import TokenNoise
from lmforge.plugins.objectives.causal_lm import CausalLM, causal_lm_loss


@pytest.fixture(scope="module")
def tokenizer():
    rng = random.Random(0)
    words = "the cat sat on a mat and a dog ran to the park while birds sang in tall green trees".split()
    return train_tokenizer([" ".join(rng.choice(words) for _ in range(12)) for _ in range(200)],
                           TokenizerTraining(vocab_size=300), "bpe")


def noise(tokenizer, **probabilities) -> TokenNoise:
    plugin = TokenNoise(**probabilities)
    plugin.setup(SimpleNamespace(tokenizer=tokenizer, backbone=nn.Linear(1, 1)))
    return plugin


def batch(tokenizer, rows: int = 16, length: int = 256) -> dict[str, torch.Tensor]:
    """Packed blocks: regular tokens with an end-of-text token every 32 positions."""
    ids = torch.randint(3, len(tokenizer), (rows, length), generator=torch.Generator().manual_seed(0))
    ids[:, ::32] = tokenizer.eos_token_id
    return CausalLM().prepare({"input_ids": ids}, torch.Generator())


def test_replaces_about_p_of_the_regular_tokens_and_never_special_ones(tokenizer):
    plugin = noise(tokenizer, replace_probability=0.2)
    clean = batch(tokenizer)
    out = plugin.process_batch(clean, torch.Generator().manual_seed(1))
    special = clean["input_ids"] == tokenizer.eos_token_id
    changed = out["input_ids"] != clean["input_ids"]
    regular = len(plugin.regular_ids)
    # a replacement draws the same id with probability 1/regular
    assert float(changed[~special].float().mean()) == pytest.approx(0.2 * (1 - 1 / regular), abs=0.015)
    assert not changed[special].any()
    assert not torch.isin(out["input_ids"][changed], plugin.special_ids).any()
    assert torch.equal(out["labels"], clean["labels"])  # the targets stay clean
    assert out.keys() == clean.keys()


def test_masks_about_p_of_the_regular_tokens(tokenizer):
    out = noise(tokenizer, replace_probability=0.0, mask_probability=0.3).process_batch(
        batch(tokenizer), torch.Generator().manual_seed(1))
    masked = out["input_ids"] == tokenizer.mask_token_id
    regular = out["input_ids"] != tokenizer.eos_token_id
    assert float(masked.sum() / (regular.sum())) == pytest.approx(0.3, abs=0.015)


def test_delete_keeps_the_shape_shifts_left_and_pads_what_is_not_scored(tokenizer):
    plugin = noise(tokenizer, replace_probability=0.0, delete_probability=0.25)
    clean = batch(tokenizer)
    out = plugin.process_batch(clean, torch.Generator().manual_seed(1))
    assert out["input_ids"].shape == clean["input_ids"].shape
    kept = out["attention_mask"].sum(1)
    eligible = (clean["input_ids"] != tokenizer.eos_token_id).sum()
    assert float((clean["input_ids"].numel() - kept.sum()) / eligible) == pytest.approx(0.25, abs=0.015)
    for row in range(clean["input_ids"].shape[0]):
        n = int(kept[row])
        ids, original = out["input_ids"][row].tolist(), clean["input_ids"][row].tolist()
        assert out["attention_mask"][row].tolist() == [1] * n + [0] * (len(ids) - n)  # padding at the end only
        assert ids[n:] == [tokenizer.pad_token_id] * (len(ids) - n)
        assert out["labels"][row, n:].eq(-100).all() and torch.equal(out["labels"][row, :n], out["input_ids"][row, :n])
        iterator = iter(original)  # what is left is the original row with tokens removed, in order
        assert all(any(token == o for o in iterator) for token in ids[:n])
        assert original.count(tokenizer.eos_token_id) == ids[:n].count(tokenizer.eos_token_id)
    # The causal LM loss counts the kept tokens only.
    logits = torch.zeros(*out["input_ids"].shape, len(tokenizer))
    assert int(causal_lm_loss(logits, out["labels"])[1]) == int((kept - 1).sum())


def test_fresh_every_step_and_reproducible_from_the_seed(tokenizer):
    plugin = noise(tokenizer, replace_probability=0.1, delete_probability=0.1)
    clean = batch(tokenizer, rows=2, length=64)
    generator = torch.Generator().manual_seed(7)
    first, second = plugin.process_batch(clean, generator), plugin.process_batch(clean, generator)
    assert not torch.equal(first["input_ids"], second["input_ids"])
    again = plugin.process_batch(clean, torch.Generator().manual_seed(7))
    assert torch.equal(first["input_ids"], again["input_ids"])


def test_zero_rates_change_nothing(tokenizer):
    clean = batch(tokenizer, rows=2, length=64)
    out = noise(tokenizer, replace_probability=0.0).process_batch(clean, torch.Generator())
    assert torch.equal(out["input_ids"], clean["input_ids"])


def test_bad_settings_are_refused(tokenizer):
    with pytest.raises(ValueError, match="add up to at most 1"):
        TokenNoise(replace_probability=0.6, delete_probability=0.6)
    with pytest.raises(ValueError, match=r"mask_probability must be in \[0, 1\]"):
        TokenNoise(mask_probability=-0.1)
    no_mask = SimpleNamespace(mask_token_id=None, pad_token_id=0, all_special_ids=[0])
    with pytest.raises(ValueError, match="needs a tokenizer with a mask token"):
        TokenNoise(mask_probability=0.1).setup(SimpleNamespace(tokenizer=no_mask, backbone=nn.Linear(1, 1)))
