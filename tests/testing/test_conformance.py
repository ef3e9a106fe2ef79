"""lmforge.testing: the kit passes plugins that keep the contract and names the check that a broken one fails.

Each broken plugin below breaks exactly one rule; the test checks that the kit fails on it with a message
that says which rule, so a plugin author can fix it from the message alone.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from torch import nn

from lmforge.core.plugins import Augmenter, BiasMitigator, Distiller, Objective, Regularizer
from lmforge.testing import FIXTURES, ConformanceError, Kit, MissingFixture, check_plugin, step_context


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    return Kit(tmp_path_factory.mktemp("kit"))


class GoodPenalty(Regularizer):
    """Mean squared logit; logs a metric of its own, as plugins may."""

    def __init__(self, weight: float = 0.1) -> None:
        super().__init__()
        self.weight = weight
        self.scale = nn.Parameter(torch.ones(()))

    def loss(self, ctx):
        ctx.model.log("metric/good_penalty_scale", self.scale.detach())
        return self.weight * self.scale * ctx.outputs.logits.float().pow(2).mean()


class NaNLoss(Regularizer):
    def loss(self, ctx):
        return ctx.objective_loss * float("nan")


class DetachedLoss(Regularizer):
    def loss(self, ctx):
        return ctx.objective_loss.detach() * 0.1


class RaisingLoss(Regularizer):
    def loss(self, ctx):
        raise RuntimeError("forgot a case")


class LazyParameter(Regularizer):
    """Creates its parameter in loss, where a fresh model (a resumed run) does not have it."""

    def loss(self, ctx):
        if not hasattr(self, "scale"):
            self.scale = nn.Parameter(torch.ones(()))
        return self.scale * 0.0 + ctx.objective_loss * 0.0


class Unpicklable(Regularizer):
    def __init__(self) -> None:
        super().__init__()
        self.transform = lambda x: x


class GlobalRandomText(Augmenter):
    def process_text(self, examples, rng):
        return {**examples, "text": [t if random.random() < 0.5 else t.upper() for t in examples["text"]]}


class DropsColumns(Augmenter):
    def process_text(self, examples, rng):
        return {"text": examples["text"]}


class GlobalRandomBatch(Augmenter):
    def process_batch(self, batch, generator):
        ids = batch["input_ids"]
        noise = torch.randint(0, 2, ids.shape)  # torch's global RNG, not the generator
        return {**batch, "input_ids": torch.where(noise.bool(), ids.roll(1, dims=1), ids)}


class OutOfVocabulary(Augmenter):
    def process_batch(self, batch, generator):
        return {**batch, "input_ids": batch["input_ids"] + 10_000}


class NeedsThreshold(Regularizer):
    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold


@pytest.mark.parametrize(("plugin", "message"), [
    (NaNLoss, r"NaNLoss on causal_lm: loss/na_n_loss = nan is not finite"),
    (DetachedLoss, r"DetachedLoss on causal_lm: the loss term does not depend on any parameter"),
    (RaisingLoss, r"RaisingLoss on causal_lm: loss raised: RuntimeError: forgot a case"),
    (LazyParameter, r"(?s)LazyParameter on causal_lm: state_dict round-trip: the trained model's state does not "
                    r"load into a fresh one .*Unexpected key\(s\) in state_dict: \"regularizers.0.scale\""),
    (Unpicklable, r"Unpicklable on causal_lm: pickling the plugin \(spawn-based strategies pickle the model\) failed"),
    (GlobalRandomText, r"GlobalRandomText on causal_lm: process_text is not deterministic"),
    (DropsColumns, r"DropsColumns on causal_lm: process_text dropped the column\(s\) \['id'\]"),
    (GlobalRandomBatch, r"GlobalRandomBatch on causal_lm: process_batch is not deterministic.*not from torch's "
                        r"global RNG"),
    (OutOfVocabulary, r"OutOfVocabulary on causal_lm: process_batch produced input ids outside the vocabulary "
                      r"\[0, 3\d\d\)"),
    (NeedsThreshold, r"NeedsThreshold on causal_lm: NeedsThreshold.__init__ requires 'threshold', which the kit "
                     r"cannot fill \(it fills \['teacher'\]\); pass init_args=\{'threshold': ...\}"),
])
def test_a_plugin_that_breaks_a_rule_fails_naming_it(plugin, message, kit):
    with pytest.raises(ConformanceError, match=message):
        kit.check(plugin, tasks=["causal_lm"])


def test_a_failed_training_step_keeps_the_hosts_error_as_the_cause(kit):
    with pytest.raises(ConformanceError) as excinfo:
        kit.check(RaisingLoss, tasks=["causal_lm"])
    cause = excinfo.value.__cause__
    assert isinstance(cause, RuntimeError) and str(cause).startswith(
        "Plugin RaisingLoss (model.regularizers[0]; class test_conformance.RaisingLoss, not an installed plugin) "
        "failed in loss (loss stage): RuntimeError: forgot a case")


def test_a_plugin_that_keeps_the_contract_passes_every_check_on_every_task(kit):
    report = kit.check(GoodPenalty)
    assert report.tasks == ["causal_lm", "masked_lm"]
    for task in report.tasks:
        for check in ("pickle", "training step", "state_dict round-trip", "gradient flow", "loss"):
            assert f"{task}: {check}" in report.passed
    kit.check(NeedsThreshold, init_args={"threshold": 0.5}, tasks=["masked_lm"])


class Shout(Augmenter):
    def process_text(self, examples, rng):
        return {**examples, "text": [t.upper() if rng.random() < 0.5 else t for t in examples["text"]]}


class Weigh(BiasMitigator):
    def sample_weights(self, examples):
        return [1.0 + len(t) for t in examples["text"]]


class NegativeWeights(BiasMitigator):
    def sample_weights(self, examples):
        return [-1.0] * len(examples)


def test_data_stage_checks_run_for_text_plugins(kit):
    assert {"causal_lm: validation split untouched", "causal_lm: process_text"} <= set(
        kit.check(Shout, tasks=["causal_lm"]).passed)
    assert "causal_lm: sample_weights" in kit.check(Weigh, tasks=["causal_lm"]).passed
    with pytest.raises(ConformanceError, match=r"NegativeWeights on causal_lm: sample_weights must give 16 finite, "
                                               r"non-negative weights, got \[-1.0, "):
        kit.check(NegativeWeights, tasks=["causal_lm"])


def test_the_validation_check_catches_a_host_that_touches_validation(kit, monkeypatch):
    from lmforge.core.data.text import TextData

    original = TextData._apply_text_plugins

    def everywhere(self, docs, split, plugins):  # a broken host: runs augmenters on validation too
        return original(self, docs, "train", plugins)

    monkeypatch.setattr(TextData, "_apply_text_plugins", everywhere)
    with pytest.raises(ConformanceError, match=r"Shout on causal_lm: process_text changed the validation split"):
        kit.check(Shout, tasks=["causal_lm"])


def test_supported_objectives_choose_the_tasks_and_unknown_ones_are_reported(kit):
    class MaskedOnly(Regularizer):
        supported_objectives = ("MaskedLM",)

    assert kit.tasks_for(MaskedOnly) == ["masked_lm"]

    class TagOnly(Regularizer):
        supported_objectives = ("token_classification",)

    assert kit.tasks_for(TagOnly) == ["token_classification"]

    class SummaryOnly(Regularizer):
        supported_objectives = ("summarization",)

    with pytest.raises(MissingFixture, match=r"SummaryOnly supports \['summarization'\], and the kit has no "
                                             r"fixture for any of them .*register_fixture"):
        kit.tasks_for(SummaryOnly)
    with pytest.raises(ConformanceError, match=r"MaskedOnly: cannot check on \['causal_lm'\]"):
        kit.tasks_for(MaskedOnly, ["causal_lm"])

    class Seq2Seq(Objective):
        auto_model: ClassVar[str] = "AutoModelForSeq2SeqLM"

    with pytest.raises(MissingFixture, match=r"Seq2Seq supports \['seq2_seq_lm'\]"):
        kit.tasks_for(Seq2Seq)


class TeacherCopy(Distiller):
    """Mean squared difference to a teacher loaded from ``teacher`` (an HF directory)."""

    def __init__(self, teacher: str) -> None:
        super().__init__()
        self.teacher = teacher
        self._frozen: list[nn.Module] = []

    def setup(self, model):
        import transformers

        auto = getattr(transformers, model.objective.auto_model)
        self._frozen = [auto.from_pretrained(self.teacher, local_files_only=True).eval().requires_grad_(False)]

    def loss(self, ctx):
        with torch.no_grad():
            target = self._frozen[0](**ctx.model.objective.model_inputs(ctx.batch)).logits
        return (ctx.outputs.logits - target).pow(2).mean()


def test_a_required_teacher_is_filled_with_a_saved_tiny_model(kit):
    assert "masked_lm: gradient flow" in kit.check(TeacherCopy, tasks=["masked_lm"]).passed
    teacher = Path(kit.workdir.teacher(FIXTURES["masked_lm"]))
    assert (teacher / "config.json").exists() and (teacher / "tokenizer.json").exists()


def test_step_context_is_what_the_loss_hook_sees(kit):
    plugin = GoodPenalty(weight=2.0)
    ctx = step_context(plugin, task="masked_lm", kit=kit)
    assert set(ctx.batch) >= {"input_ids", "labels"} and ctx.model.regularizers[0] is plugin
    expected = 2.0 * ctx.outputs.logits.detach().float().pow(2).mean()
    assert torch.allclose(plugin.loss(ctx).detach(), expected)


def test_check_plugin_uses_a_default_kit_and_refuses_non_plugins():
    with pytest.raises(ConformanceError, match="is not a plugin class"):
        check_plugin(int)  # type: ignore[arg-type]


def test_a_plugin_for_every_objective_is_checked_on_the_language_model_tasks_and_on_classification_when_asked(kit):
    assert kit.tasks_for(GoodPenalty) == ["causal_lm", "masked_lm"]
    assert kit.tasks_for(GoodPenalty, ["token_classification"]) == ["token_classification"]
    tasks = ["sequence_classification", "token_classification"]
    report = kit.check(GoodPenalty, tasks=tasks)
    for task in tasks:
        assert {f"{task}: training step", f"{task}: state_dict round-trip", f"{task}: loss"} <= set(report.passed)


def test_the_classification_fixtures_hold_generated_labels(kit):
    sequences = kit.workdir.plain_data(FIXTURES["sequence_classification"])
    assert (sequences.labels.kind, sequences.labels.names) == ("class", ["animals", "people", "weather"])
    tags = kit.workdir.plain_data(FIXTURES["token_classification"])
    assert (tags.labels.kind, tags.labels.names) == ("tags", ["O", "B-LOC", "B-PER"])
    assert tags.labels.counts["train"]["B-PER"] > 0 and tags.labels.counts["train"]["B-LOC"] > 0


def test_step_context_on_sequence_classification_scores_one_row_per_example(kit):
    ctx = step_context(GoodPenalty(), task="sequence_classification", kit=kit)
    batch_size = ctx.batch["input_ids"].shape[0]
    assert ctx.outputs.logits.shape == (batch_size, 3) and ctx.scored_logits().shape == (batch_size, 3)
    assert ctx.batch["labels"].shape == (batch_size,)


class CheckpointTeacher(Distiller):
    """Mean squared difference to a teacher loaded with the public loader (a checkpoint or an HF directory)."""

    def __init__(self, teacher: str) -> None:
        super().__init__()
        self.teacher = teacher
        self._teacher = None

    def setup(self, model):
        from lmforge.core.teacher import load_teacher

        self._teacher = load_teacher(self.teacher, model)

    def loss(self, ctx):
        target = self._teacher(ctx.objective.model_inputs(ctx.batch)).logits
        return (ctx.outputs.logits - target).pow(2).mean()


@pytest.mark.parametrize("task", ["causal_lm", "sequence_classification"])
def test_the_kit_gives_teachers_as_lmforge_checkpoints(task, kit):
    from lmforge.core.checkpoint import CKPT_KEY, load_checkpoint

    path = kit.teacher(task, checkpoint=True)
    saved = load_checkpoint(path)[CKPT_KEY]
    assert path.endswith(f"{task}.ckpt")
    assert saved["auto_model"] == kit.workdir.model(FIXTURES[task]).objective.auto_model
    assert f"{task}: gradient flow" in kit.check(CheckpointTeacher, init_args={"teacher": path}, tasks=[task]).passed
    with pytest.raises(MissingFixture, match="no fixture for 'summarization'"):
        kit.teacher("summarization")
