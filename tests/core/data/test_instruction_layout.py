"""Packing and padding of instruction examples: best-fit decreasing blocks, positions that restart, the
block-diagonal mask (a packed example's logits equal its logits alone, gpt2 and llama, sdpa and eager),
padded batches and the length-grouped sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from lmforge.core.data.instruction import IGNORE_INDEX
from lmforge.core.data.instruction_layout import (
    LengthGroupedSampler,
    PackedExamples,
    TokenizedExamples,
    example_positions,
    model_inputs,
    pack_examples,
    pack_rows,
    packed_attention_mask,
    pad_examples,
)

X = IGNORE_INDEX
VOCAB = 60


def tiny_model(arch: str, attn: str) -> AutoModelForCausalLM:
    if arch == "gpt2":
        config = AutoConfig.for_model("gpt2", n_layer=2, n_embd=32, n_head=4, n_positions=64, vocab_size=VOCAB,
                                      bos_token_id=0, eos_token_id=0)
    else:
        config = AutoConfig.for_model("llama", num_hidden_layers=2, hidden_size=32, intermediate_size=64,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      vocab_size=VOCAB, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn).eval()


# -- packing ---------------------------------------------------------------------------------------


def test_pack_examples_is_best_fit_decreasing() -> None:
    # By hand, block 8: 5 opens A (3 free); 4 opens B (4 free); 3 fills A exactly; 3 goes to B (1 free);
    # 2 opens C; 1 fills B.
    assert pack_examples([5, 4, 3, 3, 2, 1], 8) == [[0, 2], [1, 3, 5], [4]]


def test_pack_examples_places_every_example_once_within_the_block() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 33, size=500)
    blocks = pack_examples(lengths, 32)
    assert sorted(i for b in blocks for i in b) == list(range(500))
    assert all(lengths[b].sum() <= 32 for b in blocks)
    assert len(blocks) <= int(np.ceil(lengths.sum() / 32)) + 25  # close to the lower bound


def test_pack_examples_refuses_an_example_longer_than_the_block() -> None:
    with pytest.raises(ValueError, match="example 1 has 9 tokens"):
        pack_examples([3, 9], 8)


def test_example_positions_restart_for_each_example() -> None:
    assert example_positions([3, 2, 0, 1]).tolist() == [0, 1, 2, 0, 1, 0]


def test_packed_attention_mask_is_block_diagonal_causal() -> None:
    positions = torch.tensor([[0, 1, 2, 0, 1, 0]])
    mask = packed_attention_mask(positions)
    example = [0, 0, 0, 1, 1, 2]
    expected = torch.tensor([[0.0 if k <= q and example[k] == example[q] else torch.finfo(torch.float32).min
                              for k in range(6)] for q in range(6)])
    assert mask.shape == (1, 1, 6, 6)
    assert torch.equal(mask[0, 0], expected)


def test_pack_rows_pads_the_batch_to_its_fullest_block_as_an_example_of_its_own() -> None:
    rows = [{"input_ids": [5, 6, 7, 8, 9], "labels": [X, X, 7, X, 9], "lengths": [3, 2]},
            {"input_ids": [4, 4], "labels": [X, 4], "lengths": [2]}]
    batch = pack_rows(rows, pad_token_id=1)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [4, 4, 1, 1, 1]]
    assert batch["labels"].tolist() == [[X, X, 7, X, 9], [X, 4, X, X, X]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]]


def test_packed_examples_concatenate_their_blocks() -> None:
    examples = TokenizedExamples(np.array([1, 2, 3, 4, 5, 6]), np.array([X, 2, X, 4, 5, 6]), np.array([2, 1, 3]))
    data = PackedExamples(examples, [[0, 2], [1]])
    item = data[0]
    assert item["input_ids"].tolist() == [1, 2, 4, 5, 6] and item["labels"].tolist() == [X, 2, 4, 5, 6]
    assert item["lengths"] == [2, 3] and data.lengths == [5, 1]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_a_packed_example_sees_only_itself(arch: str, attn: str) -> None:
    model = tiny_model(arch, attn)
    generator = torch.Generator().manual_seed(1)
    examples = [torch.randint(1, VOCAB, (n,), generator=generator) for n in (5, 7, 3)]
    row = {"input_ids": torch.cat(examples).tolist(), "labels": torch.cat(examples).tolist(), "lengths": [5, 7, 3]}
    short = {"input_ids": examples[1].tolist(), "labels": examples[1].tolist(), "lengths": [7]}
    batch = pack_rows([row, short], pad_token_id=0)  # the second row ends in 8 padding tokens
    with torch.no_grad():
        packed = model(**model_inputs(batch)).logits
        alone = [model(e[None]).logits[0] for e in examples]
        # The control: the same row without the block-diagonal mask lets later examples see earlier ones.
        unmasked = model(batch["input_ids"][:1], position_ids=batch["position_ids"][:1]).logits[0]
    torch.testing.assert_close(packed[0], torch.cat(alone), rtol=0, atol=1e-5)
    torch.testing.assert_close(packed[1, :7], alone[1], rtol=0, atol=1e-5)
    assert (unmasked[5:] - torch.cat(alone[1:])).abs().max() > 1e-3


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_the_mask_keeps_examples_apart_under_bf16_autocast(arch: str) -> None:
    model = tiny_model(arch, "eager")
    examples = [torch.arange(1, 6), torch.arange(10, 17)]
    batch = pack_rows([{"input_ids": torch.cat(examples).tolist(), "labels": [X] * 12, "lengths": [5, 7]}], 0)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        packed = model(**model_inputs(batch)).logits[0].float()
        alone = torch.cat([model(e[None]).logits[0].float() for e in examples])
    torch.testing.assert_close(packed, alone, rtol=0, atol=1e-2)


# -- padding -----------------------------------------------------------------------------------------


def test_pad_examples_pads_right_with_mask_and_ignored_labels() -> None:
    batch = pad_examples([{"input_ids": [5, 6, 7], "labels": [X, 6, 7]}, {"input_ids": [8], "labels": [8]}], 2)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 2, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[X, 6, 7], [8, X, X]]
    assert set(model_inputs(batch)) == {"input_ids", "attention_mask"}


def _padding_share(order: list[int], lengths: list[int], batch_size: int) -> float:
    padded = real = 0
    for start in range(0, len(order) - batch_size + 1, batch_size):
        batch = [lengths[i] for i in order[start:start + batch_size]]
        padded += max(batch) * batch_size
        real += sum(batch)
    return 1 - real / padded


def test_length_grouped_batches_hold_less_padding_than_shuffled_ones() -> None:
    lengths = np.random.default_rng(0).integers(5, 200, size=2000).tolist()
    grouped = LengthGroupedSampler(lengths, batch_size=8, seed=0).order(0)
    shuffled = torch.randperm(2000, generator=torch.Generator().manual_seed(0)).tolist()
    assert sorted(grouped) == list(range(2000))
    # Mega-batches of 4 batches: a batch is a quarter of a sorted stretch of 32 random lengths.
    assert _padding_share(grouped, lengths, 8) < 0.2 < 0.4 < _padding_share(shuffled, lengths, 8)


def test_length_grouped_batches_come_in_shuffled_order_longest_first() -> None:
    lengths = np.random.default_rng(1).integers(5, 200, size=2000).tolist()
    order = LengthGroupedSampler(lengths, batch_size=8, seed=0).order(0)
    maxima = [max(lengths[i] for i in order[k:k + 8]) for k in range(0, 2000, 8)]
    assert maxima[0] == max(lengths)
    # Unshuffled, each mega-batch's batches fall in length (3 of 4 steps); shuffled, about half do.
    falling = sum(a > b for a, b in zip(maxima[1:], maxima[2:])) / (len(maxima) - 2)
    assert 0.35 < falling < 0.65
    # Each batch is still a length-sorted stretch: no batch's range overlaps another's of its mega-batch.
    spans = [(min(lengths[i] for i in order[k:k + 8]), max(lengths[i] for i in order[k:k + 8]))
             for k in range(0, 2000, 8)]
    assert np.median([hi - lo for lo, hi in spans]) < 60  # a random batch of 8 spans ~150


def test_length_grouped_sampler_is_seeded_per_epoch_and_splits_ranks() -> None:
    lengths = list(range(1, 101))
    a, b = LengthGroupedSampler(lengths, 4, seed=3), LengthGroupedSampler(lengths, 4, seed=3)
    assert a.order(0) == b.order(0) and a.order(0) != a.order(1)
    ranks = [LengthGroupedSampler(lengths, 4, seed=3, rank=r, world_size=2).order(0) for r in (0, 1)]
    assert not set(ranks[0]) & set(ranks[1]) and len(ranks[0]) == len(ranks[1]) == 50
    # Batch k of both ranks together is batch k of one process drawing batches of 8: one length-sorted stretch.
    together = LengthGroupedSampler(lengths, 8, seed=3).order(0)
    for k in range(12):
        assert set(ranks[0][4 * k:4 * k + 4]) | set(ranks[1][4 * k:4 * k + 4]) == set(together[8 * k:8 * k + 8])


def test_length_grouped_sampler_resumes_mid_epoch() -> None:
    sampler = LengthGroupedSampler(list(range(1, 41)), 4, seed=0)
    full = list(sampler)
    sampler.skip_batches = 3
    assert list(sampler) == full[12:]
