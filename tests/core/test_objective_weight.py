"""Plugin.objective_weight: plugins weight the objective's term of the training loss."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger
from tiny import TINY_GPT2

from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining
from lmforge.core.module import LanguageModel
from lmforge.core.plugins import Distiller, Regularizer, StepContext
from lmforge.plugins.objectives.causal_lm import CausalLM


class HalfHard(Distiller):
    """Weights the objective by 0.5 and adds a constant term."""

    objective_weight = 0.5

    def loss(self, ctx: StepContext):
        return ctx.objective_loss.detach() * 0.0 + 1.0


class Quarter(Regularizer):
    def __init__(self) -> None:
        super().__init__()
        self.objective_weight = 0.25


def test_objective_term_is_weighted_by_the_product_of_plugin_weights(corpus: dict[str, Path], tmp_path: Path) -> None:
    data = TextData(train=str(corpus["train"]), val=str(corpus["val"]), block_size=32, batch_size=4, seed=0,
                    tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=300)), cache_dir=str(tmp_path / "c"))
    model = LanguageModel(TINY_GPT2, CausalLM(), regularizers=[Quarter()], distiller=HalfHard())
    trainer = Trainer(max_steps=2, accelerator="cpu", logger=CSVLogger(tmp_path, name="run"), limit_val_batches=0,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      log_every_n_steps=1)
    trainer.fit(model, datamodule=data)
    with open(Path(trainer.logger.log_dir) / "metrics.csv") as f:
        rows = [{k: float(v) for k, v in r.items() if v} for r in csv.DictReader(f)]
    assert rows
    for row in rows:
        unweighted = math.log(row["metric/perplexity"])  # perplexity stays exp(unweighted loss)
        assert row["loss/causal_lm"] == pytest.approx(0.125 * unweighted, rel=1e-4)
        assert row["loss/total"] == pytest.approx(row["loss/causal_lm"] + 1.0, rel=1e-5)
