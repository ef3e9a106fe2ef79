"""MemorizationProbe and ``lmforge memorization`` on a tiny run: the exposure they give is the one a plain
ranking of every candidate gives, and the one `canaries.measure_exposures` gives on the same model."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from lmforge.cli.main import main
from lmforge.core.backbone import Backbone
from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining
from lmforge.core.module import LanguageModel
from lmforge.plugins.objectives.causal_lm import CausalLM
from lmforge.plugins.privacy.canaries import Canary, exposure_from_rank, measure_exposures
from lmforge.plugins.privacy.canary_insertion import CanaryInsertion
from lmforge.plugins.privacy.memorization_probe import MemorizationProbe

TINY_GPT2 = Backbone(architecture="gpt2", config={"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64})


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 40-step run with canaries (100 candidates each) and the probe, validating at steps 20 and 40."""
    import random

    from tiny import write_corpus

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("memorization")
    train, val = write_corpus(tmp / "train.txt", 300, seed=1), write_corpus(tmp / "val.txt", 40, seed=2)
    canaries = CanaryInsertion(repetitions=[0, 1, 30], template="the code is {secret}", digits=2, seed=5)
    model = LanguageModel(TINY_GPT2, CausalLM(), data_filters=[canaries],
                          optimizer={"class_path": "torch.optim.AdamW", "init_args": {"lr": 3e-3}})
    data = TextData(train=str(train), val=str(val), block_size=32, batch_size=8, seed=0, cache_dir=str(tmp / "cache"),
                    tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=300)))
    probe = MemorizationProbe(batch_size=64)
    trainer = Trainer(max_steps=40, val_check_interval=20, check_val_every_n_epoch=None, limit_val_batches=2,
                      accelerator="cpu", devices=1, logger=CSVLogger(tmp, name="run"), log_every_n_steps=10,
                      callbacks=[probe, ModelCheckpoint(dirpath=tmp / "ckpt", save_last=True)],
                      enable_progress_bar=False, enable_model_summary=False)
    random.seed(0)
    torch.manual_seed(0)
    trainer.fit(model, data)
    torch.set_num_threads(2)
    return {"model": model, "probe": probe, "canaries": canaries.canaries, "log_dir": Path(trainer.log_dir),
            "ckpt": tmp / "ckpt" / "last.ckpt", "tmp": tmp}


def plain_exposure(model: LanguageModel, canary: Canary) -> tuple[float, float]:
    """Exposure and the secret's log-perplexity by the definition: every candidate's log2-probability, one at a
    time after an end-of-text token, the secret's rank among them (ties in its favour)."""
    tokenizer, backbone = model.tokenizer, model.backbone.eval()
    scores = []
    with torch.no_grad():
        for secret in range(canary.format.space_size):
            ids = [tokenizer.eos_token_id, *tokenizer(canary.format.render(secret), add_special_tokens=False)["input_ids"]]
            logits = backbone(input_ids=torch.tensor([ids])).logits[0]
            nats = -sum(torch.log_softmax(logits[i], -1)[t].item() for i, t in enumerate(ids[1:]))
            scores.append(nats / math.log(2))
    mine = scores[canary.secret]
    rank = 1 + sum(s < mine for i, s in enumerate(scores) if i != canary.secret)
    return exposure_from_rank(rank, canary.format.space_size), mine


def test_the_probe_gives_the_exposure_of_the_definition(run: dict) -> None:
    model, probe = run["model"], run["probe"]
    assert len(probe.results) == len(run["canaries"]) == 3
    for canary, result in zip(run["canaries"], probe.results):
        exposure, score = plain_exposure(model, canary)
        assert result.method == "exact" and result.candidates_scored == 99
        assert result.log_perplexity == pytest.approx(score, rel=1e-5)
        assert result.exposure == pytest.approx(exposure)


def test_the_probe_equals_measure_exposures_on_the_same_model_and_logs_it(run: dict) -> None:
    model, probe, canaries = run["model"], run["probe"], run["canaries"]
    again = measure_exposures(model.backbone, model.tokenizer, canaries, context_token_id=model.tokenizer.eos_token_id)
    assert [e.exposure for e in again] == [e.exposure for e in probe.results]
    with open(run["log_dir"] / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("privacy/exposure/r30")]
    assert [int(r["step"]) for r in rows] == [19, 39]  # each validation (Lightning logs them at step - 1)
    for canary, exposure in zip(canaries, probe.results):
        assert float(rows[-1][f"privacy/exposure/r{canary.repetitions}"]) == pytest.approx(exposure.exposure)
    written = json.loads((run["log_dir"] / "canaries.json").read_text())
    assert [Canary.from_dict(c) for c in written] == canaries


def test_the_command_scores_a_checkpoint_with_its_own_canaries(run: dict, capsys: pytest.CaptureFixture) -> None:
    assert main(["memorization", str(run["ckpt"])]) == 0
    out = capsys.readouterr().out
    table = [line.split() for line in out.splitlines() if re.match(r"\s+\d+\s+-?\d+\.\d\d\s", line)]
    assert [(int(r[0]), float(r[1])) for r in table] == [
        (c.repetitions, round(e.exposure, 2)) for c, e in zip(run["canaries"], run["probe"].results)]
    assert "at most 6.64 (memorized)" in out


def test_the_command_needs_the_canaries_of_a_model_directory(run: dict, capsys: pytest.CaptureFixture) -> None:
    exported = run["tmp"] / "exported"
    assert main(["export", str(run["ckpt"]), str(exported)]) == 0
    capsys.readouterr()
    assert main(["memorization", str(exported)]) == 2
    assert "pass the canaries it was trained with, --canaries" in capsys.readouterr().err
    assert main(["memorization", str(exported), "--canaries", str(run["log_dir"] / "canaries.json")]) == 0
    out = capsys.readouterr().out
    assert f"{run['probe'].results[2].exposure:.2f}" in out
