"""RunConfig: the run's record, in W&B (see test_wandb.py) and in the CSV run's hparams.yaml."""

from __future__ import annotations

import hashlib
from importlib import metadata
from types import SimpleNamespace

import yaml
from observe_plugins import WeightPenalty

from lmforge.plugins.objectives.causal_lm import CausalLM
from lmforge.runtime.observe.run_config import file_fingerprint, run_record


def test_file_fingerprint_is_the_sha256_of_the_bytes(tmp_path):
    path = tmp_path / "data.txt"
    data = bytes(range(256)) * 5000  # more than one 1 MiB read chunk
    path.write_bytes(data)
    assert file_fingerprint(path) == {"path": str(path), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_record_names_each_plugin_with_its_distribution(tmp_path):
    (tmp_path / "a.txt").write_text("one\n")
    module = SimpleNamespace(objective=CausalLM(), plugins=lambda: [WeightPenalty()])
    datamodule = SimpleNamespace(data_files=lambda: {"data.train": [tmp_path / "a.txt"]})
    record = run_record({"seed_everything": 3}, module, datamodule)
    assert record["recipe"] == {"seed_everything": 3}
    assert record["plugins"] == {
        "objective": [{"name": "CausalLM", "class": "lmforge.plugins.objectives.causal_lm.CausalLM",
                       "distribution": "lmforge", "version": metadata.version("lmforge")}],
        "regularizer": [{"name": "WeightPenalty", "class": "observe_plugins.WeightPenalty",
                         "distribution": None, "version": None}],
    }
    assert record["data_files"]["data.train"][0]["sha256"] == hashlib.sha256(b"one\n").hexdigest()


def test_csv_run_keeps_the_record_in_hparams_yaml(observed_run):
    hparams = yaml.safe_load((observed_run.runs[0] / "hparams.yaml").read_text())
    config = yaml.safe_load((observed_run.runs[0] / "config.yaml").read_text())
    assert hparams["recipe"]["model"] == config["model"]
    assert hparams["recipe"]["trainer"]["max_steps"] == config["trainer"]["max_steps"] == 6
    assert hparams["plugins"]["objective"][0]["name"] == "CausalLM"
    assert set(hparams["data_files"]) == {"data.train", "data.val"}
