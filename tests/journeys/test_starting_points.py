"""Three starting points for each objective: from scratch, from a local HF directory, from an lmforge checkpoint.

    lmforge fit --config RECIPE ...                                                          (from scratch)
    lmforge fit --config RECIPE --model.backbone.pretrained DIR --data.init_args.tokenizer.path DIR ...
    lmforge fit --config RECIPE --model.backbone.checkpoint runs/SRC/version_0/checkpoints/last.ckpt \\
        --data.init_args.tokenizer.path runs/SRC/version_0/tokenizer ...

As the recipe headers say, and with nothing else: no ``--model.backbone.config '{}'``. The given model is the
source of the architecture, so its sizes (unlike the recipe's, on purpose) must be kept, its weights must be
the ones training starts from, and the whole backbone must train in train mode (dropout active) at the first
training batch (`JourneyProbe`'s record).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from journey_kit import PROBE, Journeys, Result, short_args

#: objective -> (its recipe, the local HF directory fixture, the recipe whose checkpoint it starts from)
OBJECTIVES = {
    "CausalLM": ("quickstart", "hf_gpt2_dir", "quickstart"),
    "MaskedLM": ("mlm-pretrain", "hf_bert_dir", "mlm-pretrain"),
    "SequenceClassification": ("finetune-sentiment", "hf_bert_dir", "mlm-pretrain"),
    "TokenClassification": ("finetune-ner", "hf_bert_dir", "mlm-pretrain"),
}
AUTO = {"hf_gpt2_dir": "AutoModelForCausalLM", "hf_bert_dir": "AutoModelForMaskedLM"}

PRETRAINED_SIZES = ("the recipe's model.backbone.config sizes are applied on top of the pretrained directory's config "
                    "(lmforge/core/backbone.py:145-146, _pretrained_config passes **spec.config to "
                    "AutoConfig.from_pretrained), so from_pretrained fails with a size-mismatch report")
PRETRAINED_EVAL = ("from_pretrained returns the model in eval mode and Lightning >= 2.2 keeps each submodule's mode "
                   "(lmforge/core/backbone.py:186), so the backbone would train with every module in eval mode and "
                   "dropout off")
CHECKPOINT_SIZES = ("the recipe's model.backbone.config sizes are applied on top of the checkpoint's saved config "
                    "(lmforge/core/backbone.py:301, config.update(spec.config)), so load_base_weights refuses it: "
                    "'does not fit this backbone: Error(s) in loading state_dict ... size mismatch'")


def check_train_mode(result: Result) -> None:
    """At the first training batch every backbone module is in train mode, so its dropout layers are active."""
    backbone = result.probe("start")["children"]["backbone"]
    assert backbone["eval_modules"] == 0, f"{backbone['eval_modules']} of {backbone['modules']} backbone modules " \
                                          "are in eval mode at the first training batch"
    assert backbone["dropouts"] > 0 and backbone["active_dropouts"] == backbone["dropouts"], backbone


def check_collector(result: Result) -> None:
    """The garbage collector, paused while the command started (lmforge/cli/collector.py), runs during training,
    with start-up's objects frozen out of its walks."""
    collector = result.probe("start")["gc"]
    assert collector["enabled"], "the garbage collector is still off at the first training batch"
    assert collector["frozen"] > 100_000, collector


def check_starts_from(result: Result, source: dict[str, tuple[float, list[int]]], base_prefix: str) -> None:
    """Training starts from ``source``'s base-model weights (``name -> (sum, shape)``, names as in the run),
    with their shapes: every one of them is in the run, with the same shape and values."""
    start = result.probe("start")["params"]
    base = {name: value for name, value in source.items() if name.startswith(f"backbone.{base_prefix}")}
    assert base, f"no base-model weights under backbone.{base_prefix} in the source"
    missing = sorted(set(base) - set(start))
    assert not missing, f"the run has no {missing[:5]}"
    shapes = {name: (start[name][1], shape) for name, (_, shape) in base.items() if start[name][1] != shape}
    assert not shapes, f"(run shape, source shape): {dict(list(shapes.items())[:5])}"
    for name, (total, _) in base.items():
        assert start[name][0] == pytest.approx(total, rel=1e-6, abs=1e-6), name


@pytest.mark.slow
@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_from_scratch(objective: str, fit_recipe) -> None:
    run = fit_recipe(OBJECTIVES[objective][0])
    run.result.expect_ok()
    check_train_mode(run.result)
    check_collector(run.result)


def hf_weights(directory: Path, auto_class: str) -> dict[str, tuple[float, list[int]]]:
    """``backbone.<name> -> (sum, shape)`` of a local HF model's parameters, loaded with transformers."""
    import transformers

    model = getattr(transformers, auto_class).from_pretrained(directory, local_files_only=True)
    return {f"backbone.{name}": (float(p.detach().double().sum()), list(p.shape))
            for name, p in model.named_parameters()}


@pytest.mark.slow
@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_from_local_hf_directory(objective: str, journeys: Journeys, request: pytest.FixtureRequest,
                                 tmp_path: Path) -> None:
    recipe, dir_fixture, _ = OBJECTIVES[objective]
    directory = request.getfixturevalue(dir_fixture)
    result = journeys.lmforge(["fit", "--config", recipe, *short_args(recipe, own_model=True, own_tokenizer=True),
                               "--model.backbone.pretrained", str(directory),
                               "--data.init_args.tokenizer.path", str(directory), PROBE], tmp_path)
    result.expect_ok()
    base_prefix = "transformer." if dir_fixture == "hf_gpt2_dir" else "bert."
    check_starts_from(result, hf_weights(directory, AUTO[dir_fixture]), base_prefix)
    check_train_mode(result)


def checkpoint_weights(path: Path) -> dict[str, tuple[float, list[int]]]:
    """``name -> (sum, shape)`` of a checkpoint's weights, read with torch.load(weights_only=True)."""
    from journey_kit import load_checkpoint

    state = load_checkpoint(path)["state_dict"]
    return {name: (float(t.double().sum()), list(t.shape)) for name, t in state.items()}


@pytest.mark.slow
@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_from_lmforge_checkpoint(objective: str, journeys: Journeys, fit_recipe, tmp_path: Path) -> None:
    recipe, _, source_recipe = OBJECTIVES[objective]
    source = fit_recipe(source_recipe)
    source.result.expect_ok()
    result = journeys.lmforge(["fit", "--config", recipe, *short_args(recipe, own_model=True, own_tokenizer=True),
                               "--model.backbone.checkpoint", str(source.last_ckpt),
                               "--data.init_args.tokenizer.path", str(source.run_dir / "tokenizer"), PROBE], tmp_path)
    result.expect_ok()
    base_prefix = "transformer." if source_recipe == "quickstart" else "bert."
    check_starts_from(result, checkpoint_weights(source.last_ckpt), base_prefix)
    check_train_mode(result)
