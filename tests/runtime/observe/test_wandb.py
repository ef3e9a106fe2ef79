"""What reaches W&B, read back from the offline run's ``run-<id>.wandb`` file; resume; no login prompt."""

from __future__ import annotations

import hashlib
import logging
from importlib import metadata
from pathlib import Path

import pytest
import torch
from jsonargparse import Namespace
from wandb_offline import offline_runs, read_run

import lmforge
from lmforge.runtime.observe import wandb as observe_wandb
from lmforge.runtime.observe.wandb import ensure_no_login_prompt, prepare_loggers, recipe_name

LOGGED = ["loss/total", "loss/causal_lm", "loss/weight_penalty", "metric/perplexity", "metric/grad_norm",
          "lr-AdamW/decay", "lr-AdamW/no_decay", "train/device/items_per_sec", "val/loss", "val/perplexity"]


@pytest.fixture(scope="module")
def wandb_runs(observed_run):
    dirs = offline_runs(observed_run.wandb_dir)
    assert len(dirs) == 2, dirs  # the fit and its resumption
    return [read_run(d) for d in dirs]


def test_run_is_named_after_the_recipe_and_tagged_with_its_plugins(wandb_runs):
    run = wandb_runs[0]
    assert run.name == "tiny"
    assert run.project == "lmforge"
    assert run.tags == ["CausalLM", "WeightPenalty"]


def test_config_holds_the_resolved_recipe_versions_plugins_and_data_fingerprints(observed_run, wandb_runs):
    config = wandb_runs[0].config
    recipe = config["recipe"]
    assert recipe["trainer"]["max_steps"] == 6
    assert recipe["model"]["regularizers"][0]["class_path"] == "observe_plugins.WeightPenalty"
    assert recipe["model"]["regularizers"][0]["init_args"] == {"weight": 1.0e-3}
    assert recipe["data"]["init_args"]["block_size"] == 32
    assert config["lmforge"] == {"version": lmforge.__version__}
    assert config["versions"]["torch"] == metadata.version("torch")
    assert config["plugins"]["objective"] == [{
        "name": "CausalLM", "class": "lmforge.plugins.objectives.causal_lm.CausalLM",
        "distribution": "lmforge", "version": metadata.version("lmforge"),
    }]
    assert config["plugins"]["regularizer"] == [{
        "name": "WeightPenalty", "class": "observe_plugins.WeightPenalty", "distribution": None, "version": None,
    }]
    assert f"objective:CausalLM lmforge=={metadata.version('lmforge')}" in config["installed_plugins"]
    for key, name in (("data.train", "train.txt"), ("data.val", "val.txt")):
        (entry,) = config["data_files"][key]
        data = (observed_run.root / name).read_bytes()
        assert Path(entry["path"]).name == name and entry["bytes"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("key", LOGGED)
def test_history_holds_every_term_and_metric_at_the_logged_steps(observed_run, wandb_runs, key):
    # The CSV logger ran beside W&B: the same values at the same steps.
    expected = observed_run.csv_series(0, key)
    assert expected, key
    assert wandb_runs[0].series(key) == [(step, pytest.approx(value, rel=1e-6)) for step, value in expected]


def test_training_terms_are_logged_every_log_every_n_steps(observed_run, wandb_runs):
    run = wandb_runs[0]
    steps = [step for step, _ in run.series("loss/total")]
    assert steps == [1, 3, 5]  # log_every_n_steps=2: after optimizer steps 2, 4 and 6
    assert [s for s, _ in run.series("metric/grad_norm")] == steps
    terms = {key: dict(run.series(key)) for key in ("loss/total", "loss/causal_lm", "loss/weight_penalty")}
    for step in steps:
        assert terms["loss/total"][step] == pytest.approx(terms["loss/causal_lm"][step] + terms["loss/weight_penalty"][step])
    assert [s for s, _ in run.series("val/loss")] == [2, 5]  # validation after steps 3 and 6


def test_generations_table_is_logged_at_validation_end(observed_run, wandb_runs):
    import json

    run = wandb_runs[0]
    tables = [row for row in run.history if row.get("samples/_type") == "table-file"]
    assert [row["trainer/global_step"] for row in tables] == [2, 5]
    table = json.loads((run.directory / "files" / tables[-1]["samples/path"]).read_text())
    assert table["columns"] == ["step", "prompt", "completion"]
    jsonl = [json.loads(line) for line in (observed_run.runs[0] / "samples.jsonl").read_text().splitlines()]
    assert table["data"] == [[r["step"], r["prompt"], r["completion"]] for r in jsonl]
    assert [r["step"] for r in jsonl] == [2, 2, 2, 5, 5, 5]  # three default prompts per validation


def test_resume_continues_the_same_wandb_run(observed_run, wandb_runs):
    first, resumed = wandb_runs
    checkpoint = torch.load(observed_run.runs[0] / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["wandb"] == {"run_id": first.run_id, "project": "lmforge"}
    assert resumed.run_id == first.run_id
    assert [step for step, _ in resumed.series("loss/total")] == [7]  # steps 7-8, logged after step 8


# -- no login prompt, names, tags and ids (no run needed) ------------------------------------------


@pytest.fixture
def no_wandb_login(monkeypatch, tmp_path):
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    return tmp_path / "netrc"


def test_no_key_and_no_mode_falls_back_to_offline_and_says_so(no_wandb_login, caplog):
    with caplog.at_level(logging.WARNING):
        ensure_no_login_prompt()
    assert observe_wandb.os.environ["WANDB_MODE"] == "offline"
    assert "offline" in caplog.text and "wandb sync" in caplog.text


@pytest.mark.parametrize("setup", ["key", "netrc", "mode"])
def test_a_key_or_an_explicit_mode_is_left_alone(no_wandb_login, monkeypatch, setup):
    if setup == "key":
        monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    elif setup == "netrc":
        no_wandb_login.write_text("machine api.wandb.ai\n  login user\n  password " + "x" * 40 + "\n")
    else:
        monkeypatch.setenv("WANDB_MODE", "disabled")
    ensure_no_login_prompt()
    assert observe_wandb.os.environ.get("WANDB_MODE") == ("disabled" if setup == "mode" else None)


def _config(ckpt_path=None, tags=None, name=None):
    return Namespace(
        config=[Path("/r/overlays/csv.yaml"), Path("/r/my-recipe.yaml"), Path("/r/overlays/wandb.yaml")],
        model=Namespace(objective=Namespace(class_path="lmforge.plugins.objectives.causal_lm.CausalLM"),
                        regularizers=[Namespace(class_path="pkg.L2Penalty")], augmenters=None,
                        bias_mitigators=[], distiller=None),
        trainer=Namespace(logger=[
            Namespace(class_path="lightning.pytorch.loggers.CSVLogger", init_args=Namespace(name=None)),
            Namespace(class_path="lightning.pytorch.loggers.WandbLogger",
                      init_args=Namespace(name=name, project=None, id=None, version=None, tags=tags)),
        ]),
        ckpt_path=ckpt_path,
    )


def test_prepare_loggers_names_tags_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    ckpt = tmp_path / "last.ckpt"
    torch.save({"wandb": {"run_id": "abc123", "project": "p"}}, ckpt)
    config = _config(ckpt_path=str(ckpt), tags=["mine"], name="given")
    prepare_loggers(config, "fit")
    csv_args, wandb_args = (spec.init_args for spec in config.trainer.logger)
    assert csv_args.name == "my-recipe"  # null is filled; the overlays are not the recipe
    assert wandb_args.name == "given"  # a name the recipe gives is kept
    assert wandb_args.project == "lmforge"
    assert wandb_args.tags == ["mine", "CausalLM", "L2Penalty"]
    assert (wandb_args.id, wandb_args.resume) == ("abc123", "allow")


def test_validate_from_a_checkpoint_starts_a_new_wandb_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_PROJECT", "proj")
    ckpt = tmp_path / "last.ckpt"
    torch.save({"wandb": {"run_id": "abc123"}}, ckpt)
    config = _config(ckpt_path=str(ckpt))
    prepare_loggers(config, "validate")
    wandb_args = config.trainer.logger[1].init_args
    assert wandb_args.id is None and wandb_args.project == "proj" and wandb_args.name == "my-recipe"


def test_recipe_name_skips_overlays():
    assert recipe_name([Path("a/overlays/wandb.yaml"), Path("b/quickstart.yaml")]) == "quickstart"
    assert recipe_name([Path("a/overlays/wandb.yaml")]) is None
