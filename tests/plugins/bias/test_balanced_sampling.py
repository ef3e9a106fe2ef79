"""BalancedSampling: Kamiran & Calders weights on a hand-made table, group balancing, and a training sampler
that really draws the groups in balanced proportion."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import datasets
import pytest
import torch
from lightning.pytorch import Trainer

from lmforge.core.backbone import Backbone
from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining
from lmforge.core.module import LanguageModel
from lmforge.plugins.bias.balanced_sampling import BalancedSampling, reweighing_weights
from lmforge.plugins.objectives.causal_lm import CausalLM

# (s, y) counts: (m, 1) x4, (m, 0) x1, (f, 1) x1, (f, 0) x2, and one row without a group.
GROUPS = ["m"] * 5 + ["f"] * 3 + [None]
LABELS = [1, 1, 1, 1, 0, 1, 0, 0, 1]
# w(s, y) = P(s) P(y) / P(s, y) with n = 8: P(m) = 5/8, P(f) = 3/8, P(y=1) = 5/8, P(y=0) = 3/8.
EXPECTED = [25 / 32] * 4 + [15 / 8] + [15 / 8] + [9 / 16] * 2 + [1.0]


def test_reweighing_matches_the_formula_on_a_hand_made_table() -> None:
    assert reweighing_weights(GROUPS, LABELS) == pytest.approx(EXPECTED)
    # In the weighted table s and y are independent: P_w(s, y) = P(s) P(y).
    w = reweighing_weights(GROUPS, LABELS)[:8]
    total = sum(w)
    for s, p_s in (("m", 5 / 8), ("f", 3 / 8)):
        for y, p_y in ((1, 5 / 8), (0, 3 / 8)):
            mass = sum(wi for wi, si, yi in zip(w, GROUPS, LABELS) if si == s and yi == y)
            assert mass / total == pytest.approx(p_s * p_y)


def test_without_a_label_groups_are_balanced() -> None:
    assert reweighing_weights(["m", "m", "m", "f", None]) == pytest.approx([2 / 3, 2 / 3, 2 / 3, 2.0, 1.0])


def test_columns_drive_the_plugin_and_the_summary_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    docs = datasets.Dataset.from_dict({"text": ["x"] * 9, "gender": GROUPS, "label": LABELS})
    plugin = BalancedSampling(attribute_column="gender", label_column="label")
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        assert plugin.sample_weights(docs) == pytest.approx(EXPECTED)
    assert plugin.summary[("m", 1)] == (4, pytest.approx(25 / 32))
    assert plugin.summary[(None, 1)] == (1, 1.0)
    assert "f, 0: 2 documents, weight 0.5625" in caplog.text


def test_attribute_words_in_the_text_give_the_group() -> None:
    docs = datasets.Dataset.from_dict({"text": ["He ran.", "He and his dog.", "She ran.", "He saw her.", "Rain."]})
    plugin = BalancedSampling()
    assert plugin.attributes(docs) == ["male", "male", "female", None, None]
    assert plugin.sample_weights(docs) == pytest.approx([0.75, 0.75, 1.5, 1.0, 1.0])


def test_a_missing_column_is_named() -> None:
    docs = datasets.Dataset.from_dict({"text": ["a"], "label": [1]})
    with pytest.raises(ValueError, match=r"attribute_column='sex' is not a column .* \['text', 'label'\]"):
        BalancedSampling(attribute_column="sex").sample_weights(docs)
    with pytest.raises(ValueError, match=r"label_column='y' is not a column"):
        BalancedSampling(label_column="y").sample_weights(docs)


def test_the_sampler_draws_groups_in_balanced_proportion(tmp_path: Path) -> None:
    # 90 documents about him, 10 about her; each about four blocks long, so most blocks hold one group.
    male = " ".join(["he ran to the park and he sang a song"] * 6)
    female = " ".join(["she ran to the park and she sang a song"] * 6)
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": female if i % 10 == 0 else male}) + "\n" for i in range(100)))
    data = TextData(train=str(train), val=str(train), block_size=16, batch_size=8, seed=0,
                    tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=300)), cache_dir=str(tmp_path / "c"))
    model = LanguageModel(Backbone("gpt2", {"n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 32}),
                          CausalLM(), bias_mitigators=[BalancedSampling()])
    Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0).fit(model, datamodule=data)
    blocks = data.datasets["train"].blocks
    words = [re.findall(r"\b(s?he)\b", data.tokenizer.decode(b.tolist())) for b in blocks]
    share = [w.count("she") / max(len(w), 1) for w in words]  # female share of each block's pronouns
    uniform = sum(share[i] * len(words[i]) for i in range(len(blocks))) / sum(len(w) for w in words)
    assert uniform == pytest.approx(0.1, abs=0.02)
    sampler = data.train_dataloader().sampler
    drawn = []
    for epoch in range(10):  # ten epochs' draws
        if hasattr(sampler, "set_epoch"):  # a sampler that draws per epoch from a seed (as Lightning drives it)
            sampler.set_epoch(epoch)
        drawn += list(sampler)
    she = sum(words[i].count("she") for i in drawn)
    he = sum(words[i].count("he") for i in drawn)
    assert she / (she + he) == pytest.approx(0.5, abs=0.05)
    assert torch.unique(torch.tensor(drawn)).numel() > len(blocks) // 2
