"""The host's plugin checks: metadata, objectives and requirements, conflicts, order, and hooks that fail.

Every refusal happens in ``LanguageModel.__init__`` (before any data is read) and names the plugin, its
recipe key and where it comes from; an exception from a hook is re-raised naming the same, keeping its type.
"""

from __future__ import annotations

import sys
from pathlib import Path

import host_plugins as hp
import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from tiny import TINY_GPT2, text_data

from lmforge import __version__
from lmforge.core.data.tokenizer import TokenizerTraining
from lmforge.core.module import LanguageModel, NonFiniteLossError, named_terms
from lmforge.core.plugin_checks import (
    PluginCompatibilityError,
    PluginError,
    hook_guard,
    metadata_problems,
    plugin_error,
    run_order,
)
from lmforge.core.plugins import Regularizer
from lmforge.plugins.objectives.causal_lm import CausalLM
from lmforge.plugins.objectives.masked_lm import MaskedLM
from lmforge.plugins.regularizers.r_drop import RDrop

HERE = "class host_plugins.{}, not an installed plugin"


def model(*, objective=None, **plugins) -> LanguageModel:
    return LanguageModel(TINY_GPT2, objective or CausalLM(), **plugins)


def trainer(tmp_path: Path, steps: int, **kwargs) -> Trainer:
    kwargs = {"enable_checkpointing": False, **kwargs}
    return Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                   enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                   default_root_dir=str(tmp_path), **kwargs)


# -- objectives and requirements -------------------------------------------------------------------


def test_a_plugin_for_another_objective_is_refused_naming_it_its_key_and_origin():
    with pytest.raises(PluginCompatibilityError) as excinfo:
        model(regularizers=[RDrop(), hp.TagOnly()])
    assert str(excinfo.value) == (
        f"TagOnly (model.regularizers[1]; {HERE.format('TagOnly')}) supports the objectives "
        "token_classification, not CausalLM (task causal_lm). Remove it from the recipe or change model.objective."
    )


def test_supported_objectives_match_class_names_and_tasks():
    model(regularizers=[hp.CausalOnly()])
    with pytest.raises(PluginCompatibilityError,
                       match=r"supports the objectives CausalLM, not MaskedLM \(task masked_lm\)"):
        model(objective=MaskedLM(), regularizers=[hp.CausalOnly()])

    class MyCausal(CausalLM):
        pass

    model(objective=MyCausal(), regularizers=[hp.CausalOnly()])  # a subclass answers to its base's name


def test_a_registered_plugin_is_named_with_its_distribution():
    class Rdropish(RDrop):
        supported_objectives = ("masked_lm",)

    with pytest.raises(PluginCompatibilityError, match=r"^Rdropish \(model.regularizers\[0\]; class "):
        model(regularizers=[Rdropish()])
    from lmforge.core.registry import describe

    assert describe(RDrop) == f"RDrop (from lmforge {__version__})"


def test_requirements_are_checked_against_the_recipe():
    with pytest.raises(PluginCompatibilityError, match=r"NeedsTeacher \(model.regularizers\[0\]; .*\) requires "
                                                       r"'teacher', which this recipe does not provide. It needs a "
                                                       r"distiller in the recipe \(model.distiller\)"):
        model(regularizers=[hp.NeedsTeacher()])
    model(regularizers=[hp.NeedsTeacher()], distiller=hp.SomeDistiller())

    with pytest.raises(PluginCompatibilityError, match=r"requires 'labels'.*objective that trains on labeled"):
        model(regularizers=[hp.NeedsLabels()])

    with pytest.raises(PluginCompatibilityError, match=r"requires 'token_counts'.*no installed plugin does"):
        model(regularizers=[hp.NeedsCounts()])
    model(regularizers=[hp.NeedsCounts()], augmenters=[hp.CountsTokens()])


def test_requiring_hidden_states_turns_them_on(corpus, tmp_path):
    plugin = hp.NeedsHidden()
    trainer(tmp_path, 1).fit(model(regularizers=[plugin]), datamodule=text_data(corpus, tmp_path / "cache"))
    assert plugin.saw_hidden == [True]


def test_conflicting_plugins_are_refused_naming_both():
    with pytest.raises(PluginCompatibilityError) as excinfo:
        model(regularizers=[RDrop(), hp.NoDropout()])
    assert str(excinfo.value) == (
        f"NoDropout (model.regularizers[1]; {HERE.format('NoDropout')}) cannot be combined with RDrop "
        f"(model.regularizers[0]; from lmforge {__version__}): NoDropout declares conflicts_with=('RDrop',). "
        "Remove one of them from the recipe."
    )


def test_a_recipe_that_cannot_work_fails_before_any_data_is_read(tmp_path, monkeypatch, capsys):
    from lmforge.cli.main import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lmforge"])
    cache = tmp_path / "cache"
    code = main(["fit", "--config", "quickstart", "--model.regularizers+=host_plugins.TagOnly",
                 "--data.init_args.cache_dir", str(cache), "--trainer.logger", "false"])
    assert code == 2
    assert "lmforge: error: TagOnly (model.regularizers[0]; class host_plugins.TagOnly" in capsys.readouterr().err
    assert not cache.exists()  # no tokenizer trained, no dataset tokenized


# -- metadata -------------------------------------------------------------------------------------


def test_metadata_problems_say_how_to_fix_them():
    class Sloppy(Regularizer):
        supported_objectives = "CausalLM"
        requires = "teacher"
        runs_after = ("Sloppy",)
        splits = ("train", "dev")

    problems = metadata_problems(Sloppy)
    assert "supported_objectives must be None or a tuple of objective names or tasks, got 'CausalLM'; write " \
           "('CausalLM',)" in problems
    assert "requires must be a frozenset of names, got 'teacher'; write frozenset({'teacher'})" in problems
    assert "runs_after names the plugin itself ('Sloppy')" in problems
    assert any(p.startswith("splits must be a tuple of 'train', 'val' and 'test'") for p in problems)
    assert metadata_problems(RDrop) == []
    with pytest.raises(PluginCompatibilityError, match="Sloppy .*: supported_objectives must be"):
        model(regularizers=[Sloppy()])


# -- order ----------------------------------------------------------------------------------------


def test_order_is_recipe_order_moved_only_as_declarations_demand():
    a, b, c = hp.Boom(), hp.CatsToDogs(), hp.DropDogs()
    assert run_order([a, b, c]) == [a, c, b]  # DropDogs is pulled just ahead of CatsToDogs
    assert run_order([c, a, b]) == [c, a, b]  # already in order: untouched
    x, y = RDrop(), hp.NoDropout()
    assert run_order([y, x]) == [y, x]  # nothing declared


def test_runs_before_and_base_class_names_order_plugins():
    class Late(Regularizer):
        runs_after = ("BiasMitigator",)  # after every bias mitigator

    late, first, drop = Late(), hp.First(), hp.DropDogs()
    assert run_order([late, drop]) == [drop, late]

    class Early(Regularizer):
        runs_before = ("Boom",)

    boom, early = hp.Boom(), Early()
    assert run_order([boom, first, early]) == [early, boom, first]


def test_the_data_stage_runs_a_filter_before_the_rewrite_that_must_follow_it(corpus, tmp_path):
    data = text_data(corpus, tmp_path / "cache")
    lm = model(bias_mitigators=[hp.CatsToDogs(), hp.DropDogs()])  # recipe order: the rewrite first
    assert [type(p).__name__ for p in lm.data_plugins()] == ["DropDogs", "CatsToDogs"]
    trainer(tmp_path, 1).fit(lm, datamodule=data)
    docs = [d for d in corpus["train"].read_text().splitlines() if d.strip()]
    kept = [d for d in docs if "dog" not in d.split()]
    # Filtered first, then doubled: the swapped copies (which now say "dog") survive.
    expected_tokens = sum(len(data.tokenizer(d)["input_ids"]) + 1 for d in  # + the EOS after each document
                          kept + [" ".join("dog" if w == "cat" else w for w in d.split()) for d in kept])
    assert len(data.datasets["train"]) == expected_tokens // 32


def test_a_cycle_is_refused_naming_both_plugins_and_their_declarations():
    with pytest.raises(PluginCompatibilityError) as excinfo:
        model(regularizers=[hp.First(), hp.Second()])
    message = str(excinfo.value)
    assert message.startswith(f"the plugins First (model.regularizers[0]; {HERE.format('First')}), Second "
                              f"(model.regularizers[1]; {HERE.format('Second')}) cannot run in the order they "
                              "declare (")
    assert "First.runs_before names Second" in message and "Second.runs_before names First" in message
    assert message.endswith("the declarations form a cycle. Remove one of them from the recipe.")


def test_a_longer_cycle_names_every_plugin_in_it():
    class A(Regularizer):
        runs_after = ("C",)

    class B(Regularizer):
        runs_after = ("A",)

    class C(Regularizer):
        runs_after = ("B",)

    with pytest.raises(PluginCompatibilityError, match=r"A \(.*B \(.*C \(.*A.runs_after names C.*C.runs_after "
                                                       r"names B.*B.runs_after names A"):
        run_order([A(), B(), C(), hp.Boom()])


# -- hooks that fail ---------------------------------------------------------------------------------


def test_plugin_error_keeps_the_type_and_chains_the_original():
    plugin = hp.Boom()
    with pytest.raises(ValueError) as excinfo:
        with hook_guard(plugin, "loss"):
            raise ValueError("bad shape")
    err = excinfo.value
    assert isinstance(err, PluginError) and type(err).__name__ == "ValueError"
    assert str(err) == f"Plugin Boom ({HERE.format('Boom')}) failed in loss (loss stage): ValueError: bad shape"
    assert isinstance(err.__cause__, ValueError) and str(err.__cause__) == "bad shape"

    key = plugin_error(KeyError("x"), "Plugin P failed")
    assert isinstance(key, KeyError) and str(key) == "Plugin P failed"  # not quoted as KeyError would


def test_an_exception_that_cannot_be_subclassed_becomes_a_plain_plugin_error():
    class Final(Exception):
        def __init_subclass__(cls, **kwargs):
            raise TypeError("final")

    err = plugin_error(Final("x"), "Plugin P failed")
    assert type(err) is PluginError and str(err) == "Plugin P failed"


def test_a_hook_that_raises_at_setup_fails_at_setup():
    lm = model(regularizers=[RDrop(), hp.Boom(at="setup")])
    from lmforge.core.data.tokenizer import train_tokenizer

    lm.tokenizer = train_tokenizer(["the cat sat on the mat"] * 20, TokenizerTraining(vocab_size=300), "bpe")
    with pytest.raises(ValueError, match=r"^Plugin Boom \(model.regularizers\[1\]; class host_plugins.Boom, not an "
                                         r"installed plugin\) failed in setup \(model stage\): ValueError: boom in "
                                         r"setup$"):
        lm.configure_model()


@pytest.mark.parametrize(("plugins", "message"), [
    ({"bias_mitigators": [hp.BoomText()]},
     r"^Plugin BoomText \(model.bias_mitigators\[0\]; .*\) failed in process_text \(data stage\): ValueError: "
     r"BoomText.process_text needs a 'no such column' column; this data has \['text'\]\..*$"),
    ({"bias_mitigators": [hp.BoomWeights()]},
     r"^Plugin BoomWeights \(model.bias_mitigators\[0\]; .*\) failed in sample_weights \(data stage\): "
     r"FileNotFoundError: weights.csv$"),
    ({"regularizers": [hp.Boom(at="process_batch")]},
     r"^Plugin Boom \(model.regularizers\[0\]; .*\) failed in process_batch \(batch stage\): ValueError: boom"),
])
def test_a_hook_that_raises_stops_the_run_before_training_naming_the_plugin(plugins, message, corpus, tmp_path):
    lm = model(**plugins)
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    with pytest.raises(PluginError, match=message):
        trainer(tmp_path, 3).fit(lm, datamodule=text_data(corpus, tmp_path / "cache"))
    assert lm.global_step == 0
    after = lm.state_dict()
    assert all(torch.equal(value, after[key]) for key, value in before.items() if key in after)
    if lm.backbone is not None:
        assert lm.trainer.optimizers[0].state == {}  # never stepped


def test_a_failure_mid_run_leaves_the_checkpoints_written_before_it_intact(corpus, tmp_path):
    ckpts = tmp_path / "ckpts"

    def fit(plugin, ckpt_path=None):
        checkpoint = ModelCheckpoint(dirpath=ckpts, every_n_train_steps=1, save_top_k=-1, save_last=True)
        trainer(tmp_path, 6, enable_checkpointing=True, callbacks=[checkpoint]).fit(
            model(regularizers=[plugin]), datamodule=text_data(corpus, tmp_path / "cache"), ckpt_path=ckpt_path)

    with pytest.raises(NonFiniteLossError, match=r"step 2: .*loss/nan_after = nan from NanAfter \(model."
                                                 r"regularizers\[0\]; class host_plugins.NanAfter, not an installed "
                                                 r"plugin\)"):
        fit(hp.NanAfter(after=2))
    saved = {p.name: p.read_bytes() for p in ckpts.iterdir()}
    assert sorted(saved) == ["epoch=0-step=1.ckpt", "epoch=0-step=2.ckpt", "last.ckpt"]  # nothing after the NaN
    state = torch.load(ckpts / "last.ckpt", weights_only=True)
    assert state["global_step"] == 2
    assert all(bool(torch.isfinite(v).all()) for v in state["state_dict"].values() if v.is_floating_point())

    with pytest.raises(ValueError, match=r"Plugin Boom .* failed in loss"):  # resumed, and fails at once
        fit(hp.Boom(at="loss"), ckpt_path=ckpts / "last.ckpt")
    assert {p.name: p.read_bytes() for p in ckpts.iterdir()} == saved  # nothing written or overwritten


def test_a_non_scalar_loss_names_the_plugin_and_its_origin():
    plugin = hp.Vector()
    with pytest.raises(TypeError, match=r"Vector.loss must return a scalar tensor .*\(3,\) for loss/vector. Reduce "
                                        r"the term \(e.g. .mean\(\)\) in the plugin Vector \(class host_plugins"):
        named_terms(plugin, plugin.loss(None))
