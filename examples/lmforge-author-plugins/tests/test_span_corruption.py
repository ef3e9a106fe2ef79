"""SpanCorruption: the plugin contract (lmforge's conformance kit), and the spans against what the docstring
promises, checked on plain tensors and on a tiny model's batch."""

import pytest
import torch

from lmforge.testing import step_context
from lmforge_author_plugins.span_corruption import SpanCorruption, corrupt_spans


def runs(flags: list[bool]) -> list[tuple[int, int]]:
    """(start, length) of each run of True."""
    out, start = [], None
    for i, flag in enumerate([*flags, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            out.append((start, i - start))
            start = None
    return out


def test_keeps_the_plugin_contract(lmforge_kit):
    report = lmforge_kit.check(SpanCorruption)
    assert report.tasks == ["causal_lm", "sequence_classification", "token_classification"]
    assert "causal_lm: process_batch" in report.passed


def test_spans_replace_about_rate_of_the_tokens_in_runs_of_span_length():
    ids = torch.zeros(64, 200, dtype=torch.long)  # replacements are 1 and 2, so a replaced token shows
    eligible = torch.ones_like(ids, dtype=torch.bool)
    out = corrupt_spans(ids, eligible, 0.15, 3, torch.tensor([1, 2]), torch.Generator().manual_seed(0))
    replaced = out != 0
    assert set(out.unique().tolist()) == {0, 1, 2}
    fraction = float(replaced.float().mean())
    assert 0.11 < fraction < 0.16  # 0.15, less the overlaps of spans
    for row in replaced.tolist():
        for start, length in runs(row):
            assert length >= 3 or start + length == len(row), (start, length)  # spans are clipped at the end only
    assert torch.equal(ids, torch.zeros_like(ids))  # the input is not modified


def test_only_eligible_tokens_change_and_the_generator_decides():
    ids = torch.arange(40).reshape(2, 20)
    eligible = torch.rand(2, 20, generator=torch.Generator().manual_seed(1)) < 0.5
    replacements = torch.tensor([100, 101, 102])
    out = corrupt_spans(ids, eligible, 1.0, 1, replacements, torch.Generator().manual_seed(2))
    assert torch.equal(out[~eligible], ids[~eligible])
    assert set(out[eligible].tolist()) <= {100, 101, 102} and eligible.sum() > 0
    again = corrupt_spans(ids, eligible, 1.0, 1, replacements, torch.Generator().manual_seed(2))
    assert torch.equal(out, again)
    assert torch.equal(corrupt_spans(ids, eligible, 0.0, 3, replacements, torch.Generator()), ids)


def test_on_a_batch_special_tokens_padding_and_labels_stay(lmforge_kit):
    plugin = SpanCorruption(rate=1.0, span_length=1)  # every eligible token replaced
    ctx = step_context(plugin, task="token_classification", kit=lmforge_kit)
    ids, mask = ctx.batch["input_ids"], ctx.batch["attention_mask"].bool()
    special = torch.isin(ids, plugin.special)
    assert special[:, 0].all()  # [CLS] starts every example and is kept
    assert (~mask).any() and special[~mask].all()  # padding ([PAD], a special token) is kept
    assert not torch.isin(ids[mask & ~special], plugin.special).any()  # nothing special drawn
    assert (ctx.batch["labels"][:, 0] == -100).all()  # [CLS] carries no tag: the labels are the objective's


def test_labels_stay_the_original_tokens_for_a_causal_lm(lmforge_kit):
    ctx = step_context(SpanCorruption(rate=1.0, span_length=1), task="causal_lm", kit=lmforge_kit)
    ids, labels = ctx.batch["input_ids"], ctx.batch["labels"]
    kept = labels != -100
    assert float((ids[kept] != labels[kept]).float().mean()) > 0.9  # the inputs changed, the targets did not


@pytest.mark.parametrize(("kwargs", "message"), [({"rate": 1.5}, r"rate must be in \[0, 1\], got 1.5"),
                                                  ({"span_length": 0}, "span_length must be >= 1, got 0")])
def test_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SpanCorruption(**kwargs)
