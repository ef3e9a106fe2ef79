"""Files from outside cannot run code: checkpoints load with ``weights_only=True``, exports are safetensors,
and a pretrained directory's own code runs only when the recipe turns ``trust_remote_code`` on (logged).
"""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from reliability_kit import lmforge

import lmforge as package
from lmforge.cli.recipes import bundled_recipes
from lmforge.core.backbone import Backbone, position_limit
from lmforge.core.module import LanguageModel
from lmforge.plugins.objectives.causal_lm import CausalLM

SOURCE = Path(package.__file__).parent


def calls(name: str) -> list[tuple[Path, ast.Call]]:
    """Every call of ``<something>.name(...)`` or ``name(...)`` in lmforge's source."""
    found = []
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                if called == name:
                    found.append((path, node))
    return found


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_every_torch_load_in_lmforge_is_weights_only() -> None:
    """Checkpoints and teachers alike: no torch.load in lmforge may unpickle arbitrary objects."""
    loads = [(p, c) for p, c in calls("load") if isinstance(c.func, ast.Attribute)
             and isinstance(c.func.value, ast.Name) and c.func.value.id == "torch"]
    assert loads, "lmforge loads checkpoints somewhere"
    unsafe = [f"{p.relative_to(SOURCE)}:{c.lineno}" for p, c in loads
              if not (isinstance(keyword(c, "weights_only"), ast.Constant) and keyword(c, "weights_only").value is True)]
    assert unsafe == []


def test_trust_remote_code_is_never_switched_on_by_lmforge_or_its_recipes() -> None:
    literal_true = [f"{p.relative_to(SOURCE)}:{c.lineno}" for p, c in calls("from_pretrained") + calls("for_model")
                    if isinstance(keyword(c, "trust_remote_code"), ast.Constant)
                    and keyword(c, "trust_remote_code").value is True]
    assert literal_true == []
    assert Backbone().trust_remote_code is False
    for name, path in bundled_recipes().items():
        backbone = ((yaml.safe_load(path.read_text()) or {}).get("model") or {}).get("backbone") or {}
        assert not backbone.get("trust_remote_code"), name


def test_trust_remote_code_is_logged_when_the_recipe_turns_it_on(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="lmforge.core.module"):
        LanguageModel(Backbone(architecture="gpt2"), CausalLM())
        assert not [r for r in caplog.records if "trust_remote_code" in r.getMessage()]
        LanguageModel(Backbone(pretrained=str(tmp_path), trust_remote_code=True), CausalLM())
    [record] = [r for r in caplog.records if "trust_remote_code" in r.getMessage()]
    assert record.getMessage() == f"model.backbone.trust_remote_code is on: code from {tmp_path} will run."


def test_a_pretrained_directorys_own_code_does_not_run_by_default(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({
        "model_type": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64, "vocab_size": 300,
        "auto_map": {"AutoConfig": "custom_config.CustomConfig", "AutoModelForCausalLM": "custom_config.Custom"},
    }))
    (model_dir / "custom_config.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    assert position_limit(Backbone(pretrained=str(model_dir))) == 64  # the built-in GPT-2 config, not the custom
    assert not marker.exists()


def evil_checkpoint(path: Path, marker: Path) -> Path:
    """A checkpoint that would create ``marker`` when unpickled without ``weights_only``."""

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    torch.save({"lmforge": {}, "state_dict": {}, "payload": Payload()}, path)
    return path


@pytest.fixture
def evil(project: Path) -> tuple[Path, Path]:
    marker = project / "ran"
    return evil_checkpoint(project / "evil.ckpt", marker), marker


@pytest.mark.parametrize("command", ["fit", "validate"])
def test_a_checkpoint_that_would_run_code_is_refused(command: str, evil, project: Path, capsys) -> None:
    ckpt, marker = evil
    assert lmforge(command, "--config", "tiny.yaml", "--ckpt_path", str(ckpt)) == 2
    err = capsys.readouterr().err
    assert f"--ckpt_path {ckpt}: refusing to load it" in err and "could run code" in err and "it names exec" in err
    assert not marker.exists()
    assert not (project / "runs").exists()


def test_the_tokenizer_restore_refuses_it_too(evil, project: Path) -> None:
    """`TextData` reads a checkpoint's tokenizer (validate/test/resume) through the same guarded loader."""
    from lmforge.core.data.text import TextData

    ckpt, marker = evil
    data = TextData(train=str(project / "train.txt"), val=str(project / "val.txt"), cache_dir=str(project / "c"))
    data.checkpoint_path = str(ckpt)
    with pytest.raises(ValueError, match=r"evil\.ckpt: refusing to load it: .*it names exec"):
        data.prepare_data()
    assert not marker.exists()


def test_export_refuses_it_and_writes_nothing(evil, project: Path, capsys) -> None:
    ckpt, marker = evil
    assert lmforge("export", str(ckpt), str(project / "hf")) == 1
    assert "refusing to load it" in capsys.readouterr().err
    assert not marker.exists() and not (project / "hf").exists()


def test_export_writes_safetensors_only(tiny_run, tmp_path: Path) -> None:
    assert lmforge("export", str(tiny_run.fit / "checkpoints" / "last.ckpt"), str(tmp_path / "hf")) == 0
    written = {p.name for p in (tmp_path / "hf").iterdir()}
    assert "model.safetensors" in written
    assert not [n for n in written if n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]

