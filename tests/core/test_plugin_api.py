"""The plugin contract of lmforge 0.2: one hook table, the scored positions, metrics beside the loss terms, the host
view, the run order computed once, kind rules as metadata, and the 0.1 forms still working with a warning."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import pytest
import torch
from tiny import TINY_GPT2

from lmforge.core import hooks
from lmforge.core.module import LanguageModel
from lmforge.core.plugins import (
    Augmenter,
    BiasMitigator,
    LossOutput,
    Regularizer,
    StepContext,
    metadata_problems,
)
from lmforge.plugins.objectives.causal_lm import CausalLM
from lmforge.plugins.objectives.masked_lm import MaskedLM
from lmforge.plugins.objectives.sequence_classification import SequenceClassification
from lmforge.plugins.objectives.token_classification import TokenClassification

DOCS = Path(__file__).resolve().parents[2] / "docs"


# -- one hook table --------------------------------------------------------------------------------


def test_every_declared_hook_is_a_method_of_its_kinds_base_class() -> None:
    from lmforge.core.plugins import KIND_BASES

    for hook in hooks.HOOKS:
        for kind in hook.kinds:
            assert callable(getattr(KIND_BASES[kind], hook.name, None)), (hook.name, kind)


def test_the_docstring_table_the_stage_map_and_the_docs_come_from_the_table() -> None:
    import lmforge.core.plugins as plugins
    from lmforge.core.plugin_checks import hook_guard  # noqa: F401  (reports stages from hooks.STAGE_OF)

    doc_rows = {m.group(1): m.group(2) for m in re.finditer(r"^``(\w+)``\s+(\w+)\s", plugins.__doc__, re.M)}
    assert doc_rows == {hook.name: hook.stage for hook in hooks.HOOKS}
    guide = (DOCS / "plugins.md").read_text(encoding="utf-8")
    for hook in hooks.HOOKS:
        assert f"`{hook.name}" in guide, f"docs/plugins.md does not document the hook {hook.name}"
    for check in {c for h in hooks.HOOKS for c in h.checks} | set(hooks.GENERAL_CHECKS):
        assert f"`{check}`" in guide, f"docs/plugins.md does not name the kit check {check!r}"


def test_a_hook_that_raises_is_reported_at_its_stage_from_the_table() -> None:
    from lmforge.core.plugin_checks import hook_guard

    with pytest.raises(ValueError, match=r"failed in process_batch \(batch stage\): ValueError: bad"):
        with hook_guard(Regularizer(), "process_batch"):
            raise ValueError("bad")


def test_a_plugin_may_implement_only_the_hooks_of_its_kind() -> None:
    class Prepares(Regularizer):
        def prepare(self, batch, generator):  # an objective's hook
            return batch

    assert any("implements prepare, which a regularizer may not" in p for p in metadata_problems(Prepares))
    assert metadata_problems(CausalLM) == []


# -- the scored positions --------------------------------------------------------------------------


def test_scored_mask_is_the_positions_each_objective_scores() -> None:
    ids = torch.tensor([[5, 6, 7, 8], [5, 6, 0, 0]])
    attention = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    causal = CausalLM().prepare({"input_ids": ids, "attention_mask": attention}, torch.Generator())
    # position t predicts t + 1: the last position and the positions before padding predict nothing
    assert CausalLM().scored_mask(causal).tolist() == [[True, True, True, False], [True, False, False, False]]
    token_labels = torch.tensor([[-100, 3, -100, 4], [2, -100, -100, -100]])
    for objective in (MaskedLM(), TokenClassification()):
        mask = objective.scored_mask({"input_ids": ids, "labels": token_labels})
        assert torch.equal(mask, token_labels != -100)
    sequence = {"input_ids": ids, "attention_mask": attention, "labels": torch.tensor([1, 0])}
    assert torch.equal(SequenceClassification().scored_mask(sequence), attention.bool())


def test_scored_logits_are_the_logits_at_the_scored_positions_in_order() -> None:
    logits = torch.arange(2 * 4 * 3, dtype=torch.float).reshape(2, 4, 3)
    batch = CausalLM().prepare({"input_ids": torch.tensor([[5, 6, 7, 8], [5, 6, 7, 8]])}, torch.Generator())
    # the plain reference: (b, t) for t < T - 1, row-major
    expected = torch.stack([logits[b, t] for b in range(2) for t in range(3)])
    ctx = StepContext(batch, SimpleNamespace(logits=logits), torch.zeros(()), objective=CausalLM(), forward=None)
    assert torch.equal(ctx.scored_logits(), expected)
    assert torch.equal(ctx.outputs.logits[ctx.scored_mask], expected)


# -- the step: metrics beside the terms, the run order once ----------------------------------------


class WithMetrics(Regularizer):
    """A term and a metric that is not a term."""

    def loss(self, ctx: StepContext) -> LossOutput:
        logits = ctx.outputs.logits[ctx.scored_mask]  # (N, V)
        return LossOutput(logits.float().pow(2).mean() * 1e-3, metrics={"scored": ctx.scored_mask.sum().float()})


def tiny_model(*, tokenizer, **plugins) -> LanguageModel:
    model = LanguageModel(TINY_GPT2, CausalLM(), **plugins)
    model.tokenizer = tokenizer
    model.configure_model()
    return model


@pytest.fixture(scope="module")
def tokenizer():
    from lmforge.core.data.tokenizer import TokenizerTraining, train_tokenizer

    texts = ["the cat sat on the mat", "a dog ran to the park", "birds sang in tall green trees"] * 20
    return train_tokenizer(texts, TokenizerTraining(vocab_size=300, min_frequency=1), "bpe")


def test_metrics_are_returned_apart_and_the_terms_add_up_to_the_total(tokenizer) -> None:
    model = tiny_model(tokenizer=tokenizer, regularizers=[WithMetrics()])
    ids = torch.randint(5, len(tokenizer), (2, 8), generator=torch.Generator().manual_seed(0))
    step = model.step_terms({"input_ids": ids}, torch.Generator().manual_seed(0))
    assert set(step.terms) == {"causal_lm", "with_metrics"}
    assert step.metrics == {"with_metrics/scored": torch.tensor(2.0 * 7)}  # 7 scored positions per row of 8
    reference = torch.nn.functional.cross_entropy(step.outputs.logits[:, :-1].reshape(-1, len(tokenizer)),
                                                  ids[:, 1:].reshape(-1))
    torch.testing.assert_close(step.terms["causal_lm"], reference)


def test_the_run_order_is_computed_once_when_the_model_is_built(tokenizer, monkeypatch) -> None:
    import lmforge.core.module as module

    class Drop(BiasMitigator):
        def process_text(self, examples, rng):
            return examples

    class Noise(Augmenter):
        def process_batch(self, batch, generator):
            return batch

    model = tiny_model(tokenizer=tokenizer, regularizers=[WithMetrics()], augmenters=[Noise()],
                       bias_mitigators=[Drop()])
    # recipe order is regularizers, augmenters, bias mitigators; augmenters declare runs_after BiasMitigator
    assert [type(p).__name__ for p in model.plugins()] == ["WithMetrics", "Drop", "Noise"]
    assert [type(p).__name__ for p in model.data_plugins()] == ["Drop"]
    monkeypatch.setattr(module, "run_order", lambda *a: pytest.fail("run_order called again"))
    ids = torch.randint(5, len(tokenizer), (2, 8), generator=torch.Generator().manual_seed(0))
    model.step_terms({"input_ids": ids}, torch.Generator().manual_seed(0))
    model.plugins()


# -- kind rules are metadata ----------------------------------------------------------------------


def test_an_augmenter_may_process_the_training_split_only() -> None:
    class ValAugmenter(Augmenter):
        splits: ClassVar[tuple[str, ...]] = ("train", "val")

    assert any("augmenters touch the training split only" in p for p in metadata_problems(ValAugmenter))


def test_an_augmenter_subclass_keeps_its_kinds_order_and_adds_its_own() -> None:
    from lmforge.core.plugins import declared

    class After(Augmenter):
        runs_after: ClassVar[tuple[str, ...]] = ("L2Penalty",)

    assert declared(After, "runs_after") == ("L2Penalty", "BiasMitigator")


# -- the 0.1 forms: working, with a warning -------------------------------------------------------


def test_ctx_model_and_the_old_constructor_still_work_with_a_deprecation_warning(tokenizer) -> None:
    model = tiny_model(tokenizer=tokenizer)
    outputs = SimpleNamespace(logits=torch.zeros(1, 4, 3))
    batch = {"input_ids": torch.tensor([[1, 2, 3, 4]])}
    with pytest.warns(DeprecationWarning, match="StepContext\\(model=...\\) is deprecated"):
        ctx = StepContext(batch, outputs, torch.zeros(()), model, forward=model)
    assert ctx.objective is model.objective and ctx.step == 0
    with pytest.warns(DeprecationWarning, match="StepContext.model is deprecated"):
        assert ctx.model is model


def test_setup_sees_the_host_view_and_other_attributes_warn(tokenizer) -> None:
    seen = {}

    class Peeks(Regularizer):
        def setup(self, host) -> None:
            seen.update(tokenizer=host.tokenizer, backbone=host.backbone, objective=host.objective,
                        device=host.device)
            with pytest.warns(DeprecationWarning, match="host.hparams, which is not part of the host view"):
                seen["hparams"] = host.hparams

    model = tiny_model(tokenizer=tokenizer, regularizers=[Peeks()])
    assert seen["backbone"] is model.backbone and seen["objective"] is model.objective
    assert seen["tokenizer"] is tokenizer and seen["device"] == torch.device("cpu")


# -- data filters: the sixth kind, an optional hook argument and the data report --------------------


def test_data_filters_run_first_on_every_split_and_report_what_they_did(corpus, tmp_path) -> None:
    from lmforge.core.data.text import TextData
    from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining
    from lmforge.core.plugins import DataFilter

    seen: list[tuple[str, str]] = []

    class DropCats(DataFilter):
        def __init__(self) -> None:
            super().__init__()
            self.dropped = 0

        def process_text(self, examples, rng, split):
            keep = ["cat" not in t for t in examples["text"]]
            self.dropped += keep.count(False)
            seen.append(("DropCats", split))
            return {k: [v for v, ok in zip(col, keep) if ok] for k, col in examples.items()}

        def data_report(self):
            report, self.dropped = {"dropped": self.dropped}, 0
            return report

    class Shout(Augmenter):  # a 0.1-style hook without `split`: still called
        def process_text(self, examples, rng):
            seen.append(("Shout", "train"))
            return {**examples, "text": [t.upper() for t in examples["text"]]}

    def build() -> tuple[TextData, list[tuple[str, str]]]:
        seen.clear()
        model = LanguageModel(TINY_GPT2, CausalLM(), augmenters=[Shout()], data_filters=[DropCats()])
        data = TextData(train=str(corpus["train"]), val=str(corpus["val"]), block_size=16, batch_size=4, seed=0,
                        tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=300)), cache_dir=str(tmp_path))
        data.trainer = SimpleNamespace(lightning_module=model, global_rank=0, world_size=1, is_global_zero=True,
                                       logger=None, progress_bar_callback=None)
        data.setup("fit")
        return data, list(seen)

    data, calls = build()
    assert calls[0] == ("DropCats", "train") and ("DropCats", "val") in calls and ("Shout", "val") not in calls
    first_shout = calls.index(("Shout", "train"))
    assert all(name == "DropCats" for name, _ in calls[:first_shout])  # the filter ran before the augmenter
    cats = {split: sum("cat" in line for line in corpus[split].read_text().splitlines()) for split in ("train", "val")}
    assert data.data_reports == {s: {"drop_cats": {"dropped": float(n)}} for s, n in cats.items()}
    again, calls = build()  # from the dataset cache: process_text does not run, the report is the same
    assert calls == [] and again.data_reports == data.data_reports
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    again.save_with_run(run_dir)
    assert json.loads((run_dir / "data_report.json").read_text())["val"]["drop_cats"]["dropped"] == cats["val"]
