"""CanaryInsertion: each canary as often as asked, in the training split only, before every other data filter."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from lmforge.core.backbone import Backbone
from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining
from lmforge.core.module import LanguageModel
from lmforge.plugins.objectives.causal_lm import CausalLM
from lmforge.plugins.privacy.canaries import CanaryFormat
from lmforge.plugins.privacy.canary_insertion import CanaryInsertion

TINY_GPT2 = Backbone(architecture="gpt2", config={"n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 64})
PHONE = {"template": "my phone number is +1 415 555 {secret}", "digits": 4, "separator": ""}


class Recorded(TextData):
    """TextData that keeps each split's processed documents (what it packs into blocks)."""

    def _layout(self, docs, split):
        self.documents = {**getattr(self, "documents", {}), split: list(docs["text"])}
        return super()._layout(docs, split)


def prepared(corpus: dict[str, Path], cache: Path, data_filters: list) -> Recorded:
    """TextData set up for fitting with ``data_filters``, as the trainer would (no model built)."""
    model = LanguageModel(TINY_GPT2, CausalLM(), data_filters=data_filters)
    data = Recorded(train=str(corpus["train"]), val=str(corpus["val"]), block_size=16, batch_size=4, seed=0,
                    tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=300)), cache_dir=str(cache))
    data.trainer = SimpleNamespace(lightning_module=model, global_rank=0, world_size=1, is_global_zero=True,
                                   logger=None, progress_bar_callback=None)
    data.setup("fit")
    return data


def documents(data: Recorded, split: str) -> list[str]:
    return data.documents[split]


def test_each_canary_goes_into_the_training_split_as_often_as_asked(corpus, tmp_path: Path) -> None:
    plugin = CanaryInsertion(repetitions=[0, 1, 5, 12], canaries=2, seed=3)
    data = prepared(corpus, tmp_path, [plugin])
    originals = corpus["train"].read_text().splitlines()
    train = documents(data, "train")
    seen = Counter(train)
    for canary in plugin.canaries:
        assert seen[canary.text] == canary.repetitions, canary
    assert len(train) == len(originals) + 2 * (1 + 5 + 12)
    assert [t for t in train if t not in {c.text for c in plugin.canaries}] == originals  # order kept
    assert documents(data, "val") == corpus["val"].read_text().splitlines()
    assert data.data_reports == {"train": {"canary_insertion": {"canaries": 6.0, "copies": 36.0}}}
    again = prepared(corpus, tmp_path, [CanaryInsertion(repetitions=[0, 1, 5, 12], canaries=2, seed=3)])
    assert documents(again, "train") == train and again.data_reports == data.data_reports  # from the cache


def test_secrets_are_seeded_distinct_and_kept_in_the_state(monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = CanaryInsertion(repetitions=[1, 4], canaries=3, groups=[2, 4], seed=7)
    assert [c.repetitions for c in plugin.canaries] == [1, 1, 1, 4, 4, 4]
    assert len({c.secret for c in plugin.canaries}) == 6
    assert plugin.canaries[0].format == CanaryFormat("my secret code is {secret}", 6, " ", (2, 4))
    assert [c.secret for c in CanaryInsertion(repetitions=[1, 4], canaries=3, seed=7).canaries] == \
        [c.secret for c in plugin.canaries]
    assert [c.secret for c in CanaryInsertion(repetitions=[1, 4], canaries=3, seed=8).canaries] != \
        [c.secret for c in plugin.canaries]
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")  # seed None: the run's seed, as seed_everything sets it
    assert CanaryInsertion(repetitions=[1, 4], canaries=3, groups=[2, 4]).canaries == plugin.canaries
    fresh = CanaryInsertion(repetitions=[1, 4], canaries=3, groups=[2, 4], seed=0)
    fresh.load_state_dict(plugin.state_dict())
    assert fresh.canaries == plugin.canaries
    assert pickle.loads(pickle.dumps(plugin)).canaries == plugin.canaries


def test_it_runs_before_every_other_data_filter_so_redaction_sees_the_canaries(corpus, tmp_path: Path) -> None:
    from lmforge.plugins.privacy.pii_redaction import PIIRedaction

    canaries = CanaryInsertion(repetitions=[2, 3], seed=1, **PHONE)
    redaction = PIIRedaction(entities=["PHONE"])
    model = LanguageModel(TINY_GPT2, CausalLM(), data_filters=[redaction, canaries])  # listed after: still first
    assert model.data_plugins() == [canaries, redaction]
    data = prepared(corpus, tmp_path, [redaction, canaries])
    train = documents(data, "train")
    assert not any(c.text in train for c in canaries.canaries)
    assert train.count("my phone number is <PHONE>") == 5
    assert data.data_reports["train"]["pii_redaction"]["PHONE"] == 5.0


def test_bad_options_are_explained() -> None:
    with pytest.raises(ValueError, match=r"repetitions must be a non-empty list of counts >= 0, got \[1, -2\]"):
        CanaryInsertion(repetitions=[1, -2])
    with pytest.raises(ValueError, match="canaries must be at least 1, got 0"):
        CanaryInsertion(canaries=0)
    with pytest.raises(ValueError, match=r"groups must be positive numbers of digits adding up to digits \(6\)"):
        CanaryInsertion(groups=[3, 4])
