"""FSDP2 block sharding (`lmforge.core.sharding`) on a one-process gloo group: tied weights stay in one group."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

from lmforge.core.sharding import fully_shard_blocks, shares_parameters


@pytest.fixture
def mesh(tmp_path: Path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


def tiny_bert() -> BertForMaskedLM:
    torch.manual_seed(0)
    return BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=32, hidden_dropout_prob=0.0,
                                      attention_probs_dropout_prob=0.0))


def test_tied_embeddings_are_found() -> None:
    model = tiny_bert()
    assert shares_parameters(model, "bert.embeddings", model.bert.embeddings)  # the decoder reuses its weights
    assert not shares_parameters(model, "bert.encoder.layer.0", model.bert.encoder.layer[0])


def test_masked_lm_with_a_tied_decoder_trains_under_fsdp2(mesh) -> None:
    model = tiny_bert()
    reference = copy.deepcopy(model)
    ids = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(1))
    fully_shard_blocks(model, mesh)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()  # the tied pair in two FSDP groups fails here ("shared with ... another FSDP group")
    expected = reference(input_ids=ids, labels=ids).loss
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    # The blocks are still sharded one by one: each BertLayer is an FSDP group of its own.
    assert all(type(layer).__name__.startswith("FSDP") for layer in model.bert.encoder.layer)


def test_causal_lm_blocks_are_sharded_one_by_one(mesh) -> None:
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_layer=2, n_embd=16, n_head=2, n_positions=16))
    fully_shard_blocks(model, mesh)
    assert all(type(block).__name__.startswith("FSDP") for block in model.transformer.h)
    ids = torch.randint(0, 50, (2, 8))
    model(input_ids=ids, labels=ids).loss.backward()
