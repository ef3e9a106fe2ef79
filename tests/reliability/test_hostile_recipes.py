"""Hostile recipes: an alias bomb fails fast in bounded memory; a checkpoint of another task or architecture is
refused, naming both, before anything is built from it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from reliability_kit import lmforge, nothing_tokenized, tiny_project

from lmforge.cli.recipe_limits import MAX_BYTES, RecipeTooLarge, check_document
from lmforge.core.backbone import Backbone, check_start_checkpoint

LMFORGE = str(Path(sys.executable).parent / "lmforge")

#: About 0.4 KB of YAML for 10**9 values when expanded ("billion laughs").
BOMB = "".join(
    [f'a0: &a0 [{", ".join(["lol"] * 10)}]\n']
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9)]
    + ["trainer:\n  callbacks: *a8\n"]
)


#: Runs a command and reports its peak memory. A small process of its own starts it: a child forked from the
#: test process would count the test process's memory (ru_maxrss keeps the high-water mark across exec).
MEASURE = ("import json, resource, subprocess, sys, time; start = time.monotonic(); "
           "done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
           "print(json.dumps({'status': done.returncode, 'stderr': done.stderr, 'seconds': time.monotonic() - start, "
           "'peak_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))")


def test_an_alias_bomb_fails_fast_in_bounded_memory(tmp_path: Path) -> None:
    import json

    tiny_project(tmp_path)
    (tmp_path / "bomb.yaml").write_text(BOMB)
    assert len(BOMB) < 1024
    env = {**os.environ, "LMFORGE_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", MEASURE, LMFORGE, "fit", "--config", "tiny.yaml", "--config",
                           "bomb.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    result = json.loads(done.stdout)
    assert result["status"] == 2, result["stderr"][-2000:]
    err = result["stderr"]
    assert "lmforge: error: --config bomb.yaml: the recipe expands to more than" in err and "aliases" in err
    # Before: 150 s and 9.4 GB without an error. Now refused before Lightning or torch are imported.
    assert result["seconds"] < 30 and result["peak_kb"] < 200 * 1024, result
    assert nothing_tokenized(tmp_path / "cache") and not (tmp_path / "runs").exists()


def test_a_bomb_given_on_the_command_line_or_nested_is_refused_too(project: Path, capsys) -> None:
    start = time.monotonic()
    value = "{" + BOMB.replace("\n", ", ").replace("trainer:, ", "").replace("  callbacks: *a8, ", "x: *a8") + "}"
    assert lmforge("fit", "--config", "tiny.yaml", "--trainer.callbacks", value) == 2
    assert "expands to more than" in capsys.readouterr().err
    assert time.monotonic() - start < 60 and not (project / "runs").exists()


@pytest.mark.parametrize("text", [
    "a: &a " + "[" * 50_000 + "]" * 50_000,  # nested deeper than Python follows
    "a: &a [x]\n" + "x" * MAX_BYTES,  # longer than any recipe
])
def test_other_unbounded_documents_are_refused(text: str) -> None:
    with pytest.raises(RecipeTooLarge):
        check_document(text)


def test_a_bomb_in_a_config_file_a_recipe_names_is_refused(project: Path) -> None:
    """A nested config file is read by jsonargparse's loader, which lmforge bounds (recipe_limits.install)."""
    import jsonargparse

    from lmforge.cli import recipe_limits

    recipe_limits.install()
    with pytest.raises(RecipeTooLarge):
        jsonargparse.get_loader("yaml")(BOMB)


def test_the_bundled_recipes_are_far_below_the_bounds() -> None:
    from lmforge.cli.recipes import bundled_recipes

    for path in bundled_recipes().values():
        check_document(path.read_text())


# -- a checkpoint of another task or architecture ------------------------------------------------

MLM_RECIPE_CHANGES = (
    ("backbone: {architecture: gpt2, config: {n_layer: 1, n_embd: 32, n_head: 2, n_positions: 64}}",
     "backbone: {architecture: bert, config: {num_hidden_layers: 1, hidden_size: 32, num_attention_heads: 2, "
     "intermediate_size: 64, max_position_embeddings: 64}}"),
    ("objective: CausalLM", "objective: MaskedLM"),
    ("name: tiny}", "name: tinymlm}"),
)


@pytest.fixture(scope="module")
def mlm_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT masked-LM run (2 steps) through the CLI; its last.ckpt."""
    root = tmp_path_factory.mktemp("mlm")
    recipe = tiny_project(root).read_text()
    for old, new in MLM_RECIPE_CHANGES:
        recipe = recipe.replace(old, new)
    (root / "tinymlm.yaml").write_text(recipe)
    env = {**os.environ, "LMFORGE_CACHE": str(root / "cache"), "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([LMFORGE, "fit", "--config", "tinymlm.yaml", "--trainer.max_steps", "2"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "runs" / "tinymlm" / "version_0" / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("command", ["fit", "validate", "test"])
def test_an_mlm_checkpoint_under_a_clm_recipe_is_refused_naming_both(command: str, mlm_checkpoint: Path,
                                                                     project: Path, capsys) -> None:
    assert lmforge(command, "--config", "tiny.yaml", "--ckpt_path", str(mlm_checkpoint)) == 2
    err = capsys.readouterr().err
    assert f"--ckpt_path {mlm_checkpoint}: the checkpoint holds a bert AutoModelForMaskedLM, but the recipe builds " \
           "a gpt2 AutoModelForCausalLM (model.objective CausalLM, model.backbone.architecture gpt2)" in err
    assert not (project / "runs").exists() and nothing_tokenized(project / "cache")


def test_a_clm_checkpoint_of_another_architecture_is_refused(tiny_run, project: Path, capsys) -> None:
    last = tiny_run.fit / "checkpoints" / "last.ckpt"
    assert lmforge("validate", "--config", "tiny.yaml", "--ckpt_path", str(last),
                   "--model.backbone.architecture", "llama") == 2
    assert "holds a gpt2 AutoModelForCausalLM, but the recipe builds a llama AutoModelForCausalLM" in \
           capsys.readouterr().err


def test_an_mlm_checkpoint_cannot_start_a_causal_lm(mlm_checkpoint: Path, project: Path, capsys) -> None:
    assert lmforge("fit", "--config", "tiny.yaml", "--model.backbone.checkpoint", str(mlm_checkpoint)) == 2
    err = capsys.readouterr().err
    assert f"model.backbone.checkpoint: {mlm_checkpoint}: the checkpoint holds a bert AutoModelForMaskedLM, but the " \
           "recipe builds an AutoModelForCausalLM (model.objective)" in err
    assert not (project / "runs").exists() and nothing_tokenized(project / "cache")


def test_an_lm_checkpoint_still_starts_a_classifier(mlm_checkpoint: Path) -> None:
    """What model.backbone.checkpoint is for: fine-tuning a new head on a pre-trained base."""
    check_start_checkpoint(Backbone(checkpoint=str(mlm_checkpoint)), "AutoModelForSequenceClassification")
