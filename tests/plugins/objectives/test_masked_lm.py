"""MaskedLM: BERT's 80/10/10 masking, measured over many draws, and the loss on the selected tokens."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForMaskedLM

from lmforge.core.data.tokenizer import TokenizerTraining, train_tokenizer
from lmforge.plugins.objectives.masked_lm import IGNORE_INDEX, MaskedLM, mask_tokens

B, T, V = 64, 128, 1000
SPECIAL_IDS = torch.tensor([0, 1, 2, 3, 4, 500])  # 0 = pad, 4 = mask; 500: special ids need not be contiguous
MASK_ID = 4
REGULAR_IDS = torch.tensor([i for i in range(V) if i not in SPECIAL_IDS.tolist()])


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Regular tokens framed by specials, with right padding of random length."""
    g = torch.Generator().manual_seed(seed)
    ids = REGULAR_IDS[torch.randint(len(REGULAR_IDS), (B, T), generator=g)]
    ids[:, 0], ids[:, 17] = 2, 500
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
    ids[torch.arange(T)[None, :] >= lengths[:, None]] = 0
    return ids, torch.isin(ids, SPECIAL_IDS)


def _draws(n: int = 8, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    ids, special = _batch()
    generator = torch.Generator().manual_seed(seed)
    return [(ids, special, *mask_tokens(ids, special, MASK_ID, REGULAR_IDS, generator)) for _ in range(n)]


def test_labels_are_the_original_ids_exactly_at_selected_positions() -> None:
    for ids, special, masked, labels in _draws(3):
        selected = labels != IGNORE_INDEX
        assert torch.equal(labels[selected], ids[selected])
        assert not selected[special].any()  # specials and padding are never selected
        assert torch.equal(masked[~selected], ids[~selected])  # unselected tokens are never changed
        assert torch.equal(masked[special], ids[special])


def test_bert_80_10_10_proportions() -> None:
    n_regular = n_selected = n_mask = n_random = n_kept = 0
    for ids, special, masked, labels in _draws(8):
        selected = labels != IGNORE_INDEX
        n_regular += int((~special).sum())
        n_selected += int(selected.sum())
        n_mask += int((masked[selected] == MASK_ID).sum())
        changed = selected & (masked != ids) & (masked != MASK_ID)
        n_random += int(changed.sum())
        n_kept += int((selected & (masked == ids)).sum())
    assert n_mask + n_random + n_kept == n_selected
    assert n_selected / n_regular == pytest.approx(0.15, abs=0.01)
    assert n_mask / n_selected == pytest.approx(0.80, abs=0.02)
    # A random replacement equals the original with probability 1/|regular| (under 0.1 %): counted as kept.
    assert n_random / n_selected == pytest.approx(0.10, abs=0.02)
    assert n_kept / n_selected == pytest.approx(0.10, abs=0.02)


def test_random_replacements_are_regular_tokens_drawn_uniformly() -> None:
    replacements = []
    for ids, special, masked, labels in _draws(8):
        changed = (masked != ids) & (masked != MASK_ID)
        replacements.append(masked[changed])
    replacements = torch.cat(replacements)
    assert not torch.isin(replacements, SPECIAL_IDS).any()
    assert torch.isin(replacements, REGULAR_IDS).all()
    # Spread over the whole regular vocabulary, not a corner of it.
    assert replacements.min() < 100 and replacements.max() > 900 and len(replacements.unique()) > 0.5 * len(replacements)


def test_each_call_draws_a_fresh_mask_and_the_seed_reproduces_it() -> None:
    first, second = _draws(2, seed=7)
    assert not torch.equal(first[3], second[3])
    again = _draws(1, seed=7)[0]
    assert torch.equal(again[2], first[2]) and torch.equal(again[3], first[3])
    assert not torch.equal(_draws(1, seed=8)[0][3], first[3])


def test_whole_word_masking_selects_every_piece_of_a_word() -> None:
    ids, special = _batch(1)
    g = torch.Generator().manual_seed(3)
    word_start = (torch.rand(B, T, generator=g) < 0.4) | special  # words of 1-several pieces
    word_start[:, 1] = True
    generator = torch.Generator().manual_seed(0)
    n_words = n_selected_words = 0
    for _ in range(4):
        _, labels = mask_tokens(ids, special, MASK_ID, REGULAR_IDS, generator, word_start=word_start)
        selected = labels != IGNORE_INDEX
        for b in range(B):
            starts = word_start[b].nonzero().squeeze(1).tolist() + [T]
            for start, end in zip(starts, starts[1:]):
                if special[b, start]:
                    assert not selected[b, start:end][special[b, start:end]].any()
                    continue
                word = selected[b, start:end]
                assert word.all() or not word.any(), (b, start, end)
                n_words += 1
                n_selected_words += int(word[0])
    assert n_selected_words / n_words == pytest.approx(0.15, abs=0.015)  # 15 % of words, not of pieces


# -- MaskedLM end to end -------------------------------------------------------------------------

WORDS = "the cat sat on a mat and the dog ran to the park while birds sang in tall green trees".split()


def _texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) for _ in range(n)]


def _model(algorithm: str) -> SimpleNamespace:
    tokenizer = train_tokenizer(_texts(200, 0), TokenizerTraining(vocab_size=300 if algorithm == "bpe" else 80),
                                algorithm)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    return SimpleNamespace(tokenizer=tokenizer, backbone=BertForMaskedLM(config).eval())


@pytest.fixture(scope="module")
def wordpiece_model() -> SimpleNamespace:
    return _model("wordpiece")


def test_prepare_never_selects_special_or_padding(wordpiece_model: SimpleNamespace) -> None:
    tokenizer = wordpiece_model.tokenizer
    objective = MaskedLM(mask_probability=0.5)
    objective.setup(wordpiece_model)
    batch = tokenizer(_texts(32, 1), padding=True, return_tensors="pt")
    batch = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    original = batch["input_ids"].clone()
    prepared = objective.prepare(batch, torch.Generator().manual_seed(0))
    assert torch.equal(batch["input_ids"], original)  # not modified in place
    selected = prepared["labels"] != IGNORE_INDEX
    never = torch.isin(original, torch.tensor(tokenizer.all_special_ids)) | (batch["attention_mask"] == 0)
    assert never.any() and selected.any()
    assert not selected[never].any()
    assert torch.equal(prepared["input_ids"][never], original[never])
    assert torch.equal(prepared["labels"][selected], original[selected])


def test_loss_and_accuracy_over_the_selected_tokens_only(wordpiece_model: SimpleNamespace) -> None:
    tokenizer, backbone = wordpiece_model.tokenizer, wordpiece_model.backbone
    objective = MaskedLM(mask_probability=0.3)
    objective.setup(wordpiece_model)
    batch = dict(tokenizer(_texts(8, 2), padding=True, return_tensors="pt"))
    prepared = objective.prepare(batch, torch.Generator().manual_seed(0))
    with torch.no_grad():
        outputs = backbone(**objective.model_inputs(prepared))
    result = objective.compute(outputs, prepared)

    losses, correct = [], 0
    for b, t in (prepared["labels"] != IGNORE_INDEX).nonzero().tolist():
        target = int(prepared["labels"][b, t])
        losses.append(F.cross_entropy(outputs.logits[b, t][None], torch.tensor([target])))
        correct += int(outputs.logits[b, t].argmax()) == target
    assert int(result.count) == len(losses) > 0
    assert result.loss.item() == pytest.approx(torch.stack(losses).mean().item(), rel=1e-5)
    accuracy, weight = result.metrics["accuracy"]
    assert accuracy.item() == pytest.approx(correct / len(losses)) and int(weight) == len(losses)
    assert result.nll is None


def test_whole_word_masking_with_wordpiece_keeps_words_together(wordpiece_model: SimpleNamespace) -> None:
    tokenizer = wordpiece_model.tokenizer
    objective = MaskedLM(mask_probability=0.5, whole_word_masking=True)
    objective.setup(wordpiece_model)
    texts = ["catdog parkbirds greentrees tallmat", "the dogsat sangtall on a mattree"]  # words split into pieces
    batch = dict(tokenizer(texts, padding=True, return_tensors="pt"))
    pieces = [tokenizer.convert_ids_to_tokens(row) for row in batch["input_ids"].tolist()]
    assert any(p.startswith("##") for row in pieces for p in row)
    for seed in range(5):
        labels = objective.prepare(batch, torch.Generator().manual_seed(seed))["labels"]
        for row, row_labels in zip(pieces, labels.tolist()):
            for t, piece in enumerate(row):
                if piece.startswith("##"):  # a continuation is selected exactly when its word start is
                    start = max(i for i in range(t) if not row[i].startswith("##"))
                    assert (row_labels[t] != IGNORE_INDEX) == (row_labels[start] != IGNORE_INDEX)


def test_whole_word_masking_with_bpe_is_refused() -> None:
    objective = MaskedLM(whole_word_masking=True)
    with pytest.raises(ValueError, match="whole_word_masking needs a WordPiece tokenizer"):
        objective.setup(_model("bpe"))


@pytest.mark.parametrize("kwargs", [{"mask_probability": 0.0}, {"mask_probability": 1.5}, {"label_smoothing": 1.0}])
def test_invalid_arguments_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=f"MaskedLM: {next(iter(kwargs))} must be"):
        MaskedLM(**kwargs)
