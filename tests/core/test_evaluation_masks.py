"""Masked-LM evaluation masks (`LanguageModel._evaluation_generator`): the same for every validation of the same
weights, and drawn apart from the training generator, which validating leaves untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from lmforge.core.backbone import Backbone
from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining
from lmforge.core.module import LanguageModel
from lmforge.plugins.objectives.masked_lm import MaskedLM

TINY_BERT = Backbone("bert", {"num_hidden_layers": 1, "hidden_size": 16, "num_attention_heads": 2,
                              "intermediate_size": 32, "max_position_embeddings": 32})


def trainer(**kwargs) -> Trainer:
    settings = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=2)
    return Trainer(**{**settings, **kwargs})


@pytest.fixture
def fitted(tmp_path: Path, corpus: dict[str, Path]) -> tuple[LanguageModel, TextData]:
    seed_everything(7)
    data = TextData(train=str(corpus["train"]), val=str(corpus["val"]), block_size=16, batch_size=4,
                    tokenizer=TokenizerSpec(train=TokenizerTraining(algorithm="wordpiece", vocab_size=120)),
                    cache_dir=str(tmp_path / "cache"))
    model = LanguageModel(TINY_BERT, MaskedLM())
    trainer(max_steps=2, limit_val_batches=0).fit(model, datamodule=data)
    return model, data


def test_two_validations_of_the_same_weights_score_the_same_masks(fitted) -> None:
    model, data = fitted
    first = trainer().validate(model, datamodule=data, verbose=False)[0]["val/loss"]
    second = trainer().validate(model, datamodule=data, verbose=False)[0]["val/loss"]
    assert first == second


def test_validation_leaves_the_training_generator_untouched(fitted) -> None:
    model, data = fitted
    before = model._generator().get_state().clone()
    trainer().validate(model, datamodule=data, verbose=False)
    assert torch.equal(model._generator().get_state(), before)


def test_evaluation_masks_differ_between_batches_and_from_training(fitted) -> None:
    model, _ = fitted
    ids = torch.randint(5, 100, (4, 16), generator=torch.Generator().manual_seed(0))
    masks = [model.objective.prepare({"input_ids": ids}, g)["labels"] != -100
             for g in (model._evaluation_generator(0), model._evaluation_generator(0), model._evaluation_generator(1),
                       torch.Generator().manual_seed(torch.initial_seed()))]
    assert torch.equal(masks[0], masks[1])  # the same batch of a pass: the same masks
    assert not torch.equal(masks[0], masks[2]) and not torch.equal(masks[0], masks[3])
