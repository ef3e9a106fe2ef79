"""``lmforge plugins``: the list with each plugin's metadata, and ``show NAME`` (metadata, hooks, arguments)."""

from __future__ import annotations

import pytest
import yaml

from lmforge import __version__
from lmforge.cli.main import main
from lmforge.cli.plugin_docs import init_arguments
from lmforge.cli.plugin_docs import describe_plugin
from lmforge.core.registry import registry


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["plugins", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_by_kind_shows_distribution_version_and_summary(capsys):
    code, out, _ = run(capsys, "--kind", "regularizer")
    assert code == 0
    lines = out.splitlines()
    rdrop = next(line for line in lines if " RDrop " in line)
    assert rdrop.split()[:4] == ["regularizer", "RDrop", "lmforge", __version__]
    assert "symmetric KL between two dropout passes" in rdrop
    assert not any(line.startswith("augmenter") for line in lines)


def test_list_shows_declared_metadata_under_a_plugin(capsys):
    _, out, _ = run(capsys, "--kind", "objective")
    lines = out.splitlines()
    index = next(i for i, line in enumerate(lines) if " CausalLM " in line)
    assert lines[index + 1].strip() == "task: causal_lm"


def test_show_prints_metadata_hooks_arguments_and_a_recipe_snippet(capsys):
    code, out, _ = run(capsys, "show", "TokenNoise")
    assert code == 0
    assert out.startswith(f"TokenNoise  (augmenter, from lmforge {__version__})\nclass: "
                          "lmforge.plugins.augmenters.token_noise.TokenNoise\n")
    assert out.count("objectives:") == 1 and "objectives: any" in out
    # The hooks' stages and times come from the one hook table.
    assert "  process_batch         batch stage: every training step, on the device, after prepare, in run order" in out
    assert "  setup                 model stage" in out and "process_text" not in out
    assert "  replace_probability: float = 0.1\n      Share of tokens replaced by a random regular token." in out
    snippet = out.split("in a recipe:\n", 1)[1]
    recipe = yaml.safe_load("\n".join(line[2:] for line in snippet.splitlines()))
    assert recipe == {"model": {"augmenters": [{"class_path": "TokenNoise", "init_args": {
        "replace_probability": 0.1, "mask_probability": 0.0, "delete_probability": 0.0}}]}}
    assert "Args:" not in out  # the docstring's argument section is shown as the argument list instead


def test_show_names_the_supported_objectives_once():
    from lmforge.core.plugins import Regularizer
    from lmforge.core.registry import PluginInfo

    class CausalOnly(Regularizer):
        """A regularizer for causal LMs."""

        supported_objectives = ("causal_lm",)

    text = describe_plugin(PluginInfo("regularizer", "CausalOnly", "somewhere", "1.0", cls=CausalOnly))
    assert text.count("objectives:") == 1 and "objectives: causal_lm" in text


def test_show_of_an_objective_and_of_a_required_argument():
    import host_plugins as hp

    from lmforge.core.registry import PluginInfo

    text = describe_plugin(registry().get("objective", "MaskedLM"))
    assert "objectives:" not in text and "task: masked_lm" in text
    assert "objective:\n      class_path: MaskedLM\n      init_args:\n        mask_probability: 0.15" in text

    text = describe_plugin(PluginInfo("regularizer", "Boom", "tests", "0", cls=hp.NeedsTeacher))
    assert "requires: teacher" in text
    args = {a.name: a for a in init_arguments(hp.Boom)}
    assert args["at"].line == "at: str = 'loss'"


def test_show_of_an_unknown_plugin_lists_the_installed_ones(capsys):
    code, _, err = run(capsys, "show", "RDrip")
    assert code == 2
    assert "no plugin 'RDrip'" in err and "Installed regularizers: Dropout, L1Penalty, L2Penalty, RDrop" in err
