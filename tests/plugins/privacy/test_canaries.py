"""The Secret Sharer's canaries and exposure: the arithmetic by hand, and memorization on a tiny GPT-2."""

from __future__ import annotations

import math
import random

import pytest
import torch

from lmforge.plugins.privacy.canaries import (
    Canary,
    CanaryFormat,
    exposure_from_rank,
    insert_canaries,
    log_perplexities,
    make_canaries,
    measure_exposure,
    rank_among,
    skew_normal_rank,
)

WORDS = ("the cat sat on a mat and the dog ran to the park while birds sang in tall green trees "
         "she read a book he cooked rice they walked home under the warm evening sun").split()


def test_format_renders_zero_padded_digits() -> None:
    fmt = CanaryFormat(digits=6)
    assert fmt.space_size == 1_000_000
    assert fmt.render(731902) == "my secret code is 7 3 1 9 0 2"
    assert fmt.render(42) == "my secret code is 0 0 0 0 4 2"
    assert CanaryFormat("pin {secret}.", digits=3, separator="").render(7) == "pin 007."
    with pytest.raises(ValueError, match="template must contain {secret} exactly once"):
        CanaryFormat("no secret here")
    with pytest.raises(ValueError, match=r"secret must be in \[0, 1000\), got 1000"):
        CanaryFormat(digits=3).render(1000)


def test_grouped_digits_and_the_plain_record() -> None:
    fmt = CanaryFormat("call +1 415 {secret} now", digits=7, groups=(3, 4))
    assert fmt.render(5552671) == "call +1 415 555 2671 now"
    assert CanaryFormat("pin {secret}", digits=4, separator="-", groups=[2, 2]).render(42) == "pin 00-42"
    canary = Canary(5552671, 8, fmt)
    assert Canary.from_dict(canary.to_dict()) == canary
    with pytest.raises(ValueError, match=r"groups must be positive numbers of digits adding up to digits \(7\), "
                                         r"got \[3, 3\]"):
        CanaryFormat(digits=7, groups=(3, 3))


def test_exposure_arithmetic_by_hand() -> None:
    # log2(10^6) - log2(1) = 6 log2(10) = 19.9316 bits; rank 4 of 1024: 10 - 2 = 8 bits; last of 1024: 0 bits.
    assert exposure_from_rank(1, 10**6) == pytest.approx(19.931568569324174)
    assert exposure_from_rank(4, 1024) == 8.0
    assert exposure_from_rank(1024, 1024) == 0.0
    assert exposure_from_rank(1000, 10**4) == pytest.approx(math.log2(10))
    with pytest.raises(ValueError, match=r"rank must be in \[1, 1024\], got 0"):
        exposure_from_rank(0, 1024)
    scores = torch.tensor([5.0, 3.0, 9.0, 4.0, 4.0, 7.0])
    assert rank_among(4.0, scores) == 2   # only 3.0 is lower; the tie (4.0) counts in the secret's favour
    assert rank_among(2.0, scores) == 1
    assert rank_among(10.0, scores) == 7


def test_canaries_are_distinct_seeded_and_inserted_as_often_as_asked() -> None:
    fmt = CanaryFormat(digits=2)
    canaries = make_canaries([1, 3, 0, 5], fmt, random.Random(3))
    assert len({c.secret for c in canaries}) == 4
    assert canaries == make_canaries([1, 3, 0, 5], fmt, random.Random(3))
    documents = [f"doc {i}" for i in range(20)]
    out = insert_canaries(documents, canaries, random.Random(0))
    assert len(out) == 20 + 9
    assert [d for d in out if d.startswith("doc")] == documents
    for canary in canaries:
        assert out.count(canary.text) == canary.repetitions
    assert out == insert_canaries(documents, canaries, random.Random(0))


def test_extrapolated_rank_matches_known_distributions() -> None:
    """Sec. 4.3's estimate against distributions whose CDF is known: within half a bit of the true exposure."""
    generator = torch.Generator().manual_seed(1)
    # N(50, 2^2): a secret 3 sigma below the mean has CDF Phi(-3), exposure -log2 Phi(-3) = 9.53 bits.
    scores = 50 + 2 * torch.randn(20_000, generator=generator, dtype=torch.float64)
    truth = -math.log2(0.5 * math.erfc(3 / math.sqrt(2)))
    assert exposure_from_rank(skew_normal_rank(44.0, scores, 10**9), 10**9) == pytest.approx(truth, abs=0.5)
    # A skew-normal (shape -4) built from two normals; its CDF at the secret by Monte Carlo over 4 10^6 draws.
    def skewed(n: int) -> torch.Tensor:
        delta = -4 / math.sqrt(17)
        u0, u1 = torch.randn(2, n, generator=generator, dtype=torch.float64)
        return 50 + 3 * (delta * u0.abs() + math.sqrt(1 - delta**2) * u1)

    reference = skewed(4 * 10**6)
    secret = 40.0
    truth = -math.log2((reference < secret).double().mean().item())
    assert 8 < truth < 12
    assert exposure_from_rank(skew_normal_rank(secret, skewed(20_000), 10**9), 10**9) == pytest.approx(truth, abs=0.5)
    assert skew_normal_rank(0.0, scores, 10**9) == 1.0  # far below every candidate: rank 1, not less


def tiny_lm(documents: list[str], steps: int, seed: int = 0):
    """A 2-layer GPT-2 and a byte-level BPE tokenizer trained on ``documents`` (packed, EOS between them)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(documents, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    from tokenizers import decoders

    bpe.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    eos = tokenizer.eos_token_id
    stream = [t for ids in tokenizer(documents, add_special_tokens=False)["input_ids"] for t in [*ids, eos]]
    block = 64
    blocks = torch.tensor(stream[: len(stream) // block * block]).view(-1, block)
    config = GPT2Config(vocab_size=len(tokenizer), n_layer=2, n_embd=64, n_head=2, n_positions=block,
                        bos_token_id=eos, eos_token_id=eos)
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        batch = blocks[torch.randint(len(blocks), (16,), generator=generator)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval(), tokenizer


def test_log_perplexity_is_the_sum_of_token_surprisals(one_thread) -> None:
    model, tokenizer = tiny_lm([" ".join(WORDS)] * 4, steps=0)
    text = "the cat sat"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[eos, *ids]])).logits[0]
    reference = -sum(torch.log_softmax(logits[i], -1)[t].item() for i, t in enumerate(ids)) / math.log(2)
    got = log_perplexities(model, tokenizer, [text, "the dog ran to the park"], context_token_id=eos)
    assert got[0].item() == pytest.approx(reference, rel=1e-5)
    # Padding in a batch changes nothing: the second text alone scores the same.
    alone = log_perplexities(model, tokenizer, ["the dog ran to the park"], context_token_id=eos)
    assert got[1].item() == pytest.approx(alone[0].item(), rel=1e-5)


def test_a_canary_seen_in_training_is_exposed_and_an_unseen_one_is_not(one_thread) -> None:
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30))) + "." for _ in range(300)]
    fmt = CanaryFormat(digits=3)  # 10^3 candidates: the exact rank is cheap
    seen, unseen = make_canaries([20, 0], fmt, random.Random(1))
    documents = insert_canaries(corpus, [seen, unseen], random.Random(2))
    model, tokenizer = tiny_lm(documents, steps=120)
    eos = tokenizer.eos_token_id
    exposed = measure_exposure(model, tokenizer, seen, context_token_id=eos)
    control = measure_exposure(model, tokenizer, unseen, context_token_id=eos)
    print(f"exposure: seen 20x {exposed.exposure:.2f} bits (rank {exposed.rank:.0f}), "
          f"never seen {control.exposure:.2f} bits (rank {control.rank:.0f}), of at most {math.log2(10**3):.2f}")
    assert exposed.method == control.method == "exact"
    assert exposed.candidates_scored == 10**3 - 1
    assert exposed.exposure > control.exposure + 3
    assert exposed.exposure > 6.6  # rank within the best 1 % of 10^3 secrets
