"""A wrong recipe fails before any data is tokenized, naming the key to change; nothing is written.

Each case adds an overlay to a working tiny recipe and runs ``lmforge fit``; the command must exit with
status 2, print the recipe key, leave lmforge's cache empty (no dataset read, no tokenizer trained), create
no run directory, and leave the data files as they were.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from reliability_kit import digests, lmforge, nothing_tokenized

from lmforge import __version__

CASES = {
    "unknown key": (
        "data:\n  init_args:\n    batch_sise: 4\n",
        ['Parser key "data"', "TextData has no argument 'batch_sise'; did you mean 'batch_size'?"],
    ),
    "wrong type": (
        "data:\n  init_args:\n    batch_size: sixteen\n",
        ["data.init_args.batch_size: Expected a <class 'int'>. Got value: sixteen"],
    ),
    "negative learning rate": (
        "optimizer:\n  class_path: torch.optim.AdamW\n  init_args: {lr: -1.0e-3}\n",
        ["optimizer.init_args.lr must be >= 0, got -0.001"],
    ),
    "optimizer argument out of range": (
        "optimizer:\n  class_path: torch.optim.AdamW\n  init_args: {lr: 1.0e-3, betas: [0.9, 1.5]}\n",
        ["optimizer.init_args.betas", "Invalid beta parameter"],
    ),
    "masking probability above 1": (
        "model:\n  objective:\n    class_path: MaskedLM\n    init_args: {mask_probability: 1.5}\n",
        ["model.objective.init_args.mask_probability", "must be in (0, 1], got 1.5"],
    ),
    "block_size beyond the positions": (
        "data:\n  init_args:\n    block_size: 128\n",
        ["data.block_size=128", "64 positions"],
    ),
    "unknown plugin": (
        "model:\n  regularizers: [L3Penalty]\n",
        ["model.regularizers", "unknown regularizer 'L3Penalty'", "L2Penalty"],
    ),
    # A run's saved config.yaml names plugins by their import path; after `pip uninstall` it still fails with
    # lmforge's own message, listing what is installed, rather than with Python's "No module named".
    "saved config naming an uninstalled plugin": (
        "model:\n  regularizers:\n    - class_path: lmforge_gone_plugins.z_loss.ZLoss\n      init_args: {weight: 0.1}\n",
        ["model.regularizers: unknown regularizer 'ZLoss'. Installed regularizers: Dropout, L1Penalty, L2Penalty, "
         "RDrop", "(The config names lmforge_gone_plugins.z_loss.ZLoss: No module named 'lmforge_gone_plugins'.)"],
    ),
    "saved config naming an uninstalled distiller": (
        "model:\n  distiller:\n    class_path: lmforge_gone_plugins.cos.CosineDistiller\n",
        ["model.distiller: unknown distiller 'CosineDistiller'. Installed distillers: HiddenStateDistillation, "
         "LogitDistillation"],
    ),
    "saved config naming a plugin that moved": (
        "model:\n  regularizers:\n    - class_path: lmforge_gone_plugins.penalties.L2Penalty\n",
        ["model.regularizers: lmforge_gone_plugins.penalties.L2Penalty cannot be imported (No module named "
         "'lmforge_gone_plugins'); the installed regularizer 'L2Penalty' is "
         f"lmforge.plugins.regularizers.l2_penalty.L2Penalty from lmforge {__version__}: name it "
         "`class_path: L2Penalty`."],
    ),
    "plugin argument that does not exist": (
        "model:\n  regularizers:\n    - class_path: L2Penalty\n      init_args: {wieght: 0.1}\n",
        ["L2Penalty has no argument 'wieght'; did you mean 'weight'?"],
    ),
    "plugin argument of the wrong type": (
        "model:\n  regularizers:\n    - class_path: L2Penalty\n      init_args: {weight: heavy}\n",
        ["model.regularizers: L2Penalty.init_args.weight: Expected a <class 'float'>. Got value: heavy"],
    ),
    # Two plugins that cannot be combined: the same plugin twice would log two terms under one key.
    # (Plugin-declared incompatibilities belong here too, once plugins can declare them.)
    "two plugins that cannot combine": (
        "model:\n  regularizers: [L2Penalty, L2Penalty]\n",
        ["model:", "['l2_penalty'] appear more than once"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_recipe_fails_early_naming_the_key(case: str, project: Path, capsys: pytest.CaptureFixture) -> None:
    overlay, expected = CASES[case]
    (project / "bad.yaml").write_text(overlay)
    data_before = digests(project / "train.txt", project / "val.txt")

    status = lmforge("fit", "--config", "tiny.yaml", "--config", "bad.yaml")

    err = capsys.readouterr().err
    assert status == 2, err
    for text in expected:
        assert text in err, f"{text!r} not in:\n{err}"
    assert "Traceback" not in err
    if case.startswith("saved config"):  # lmforge's message instead of jsonargparse's, not in front of it
        assert "Does not validate against any of the Union subtypes" not in err and "Given value" not in err
    assert nothing_tokenized(project / "cache")
    assert not (project / "runs").exists()
    assert digests(project / "train.txt", project / "val.txt") == data_before


def test_a_good_recipe_passes_the_same_checks(project: Path) -> None:
    """The checks above refuse only what is wrong: the same recipe with a correct overlay parses."""
    from lmforge.cli.training import run_cli

    (project / "good.yaml").write_text("model:\n  regularizers:\n    - class_path: L2Penalty\n"
                                       "      init_args: {weight: 0.1}\n")
    cli = run_cli(["--config", "tiny.yaml", "--config", "good.yaml"], run=False)
    assert [type(r).__name__ for r in cli.model.regularizers] == ["L2Penalty"]
    assert nothing_tokenized(project / "cache")
