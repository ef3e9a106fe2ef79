"""TokenThroughput: FLOPs per batch against a hand count; logged rates against the logged counts."""

from __future__ import annotations

import pytest
import transformers

from lmforge.runtime.observe.throughput import batch_flops


def gpt2_training_flops(layers: int, width: int, vocab: int, batch: int, length: int) -> int:
    """Forward matmul FLOPs of GPT-2 (2 per multiply-add), times 3 for forward + backward."""
    tokens = batch * length
    per_layer = (2 * tokens * width * 3 * width  # q, k, v
                 + 2 * 2 * batch * length * length * width  # scores and weighted values
                 + 2 * tokens * width * width  # attention output projection
                 + 2 * 2 * tokens * width * 4 * width)  # MLP up and down
    return 3 * (layers * per_layer + 2 * tokens * width * vocab)  # + LM head


@pytest.mark.parametrize("shape", [(4, 32), (2, 48)])
def test_batch_flops_match_a_hand_count_of_gpt2(shape):
    config = transformers.GPT2Config(vocab_size=300, n_layer=2, n_embd=64, n_head=4, n_positions=64,
                                     bos_token_id=0, eos_token_id=0, pad_token_id=1)
    model = transformers.GPT2LMHeadModel(config)
    assert batch_flops(model, shape) == gpt2_training_flops(2, 64, 300, *shape)
    assert model.config.pad_token_id == 1  # measured on a copy


def test_logged_throughput_is_consistent_with_the_counts_and_flops(observed_run):
    import torch

    batch, block = observed_run.batch, observed_run.block
    rows = {key: dict(observed_run.csv_series(0, key)) for key in
            ("train/lengths", "train/samples", "train/time", "train/device/items_per_sec",
             "train/device/flops_per_sec", "train/device/samples_per_sec")}
    assert rows["train/device/items_per_sec"], "tokens/s was not logged"
    for step, tokens in rows["train/lengths"].items():
        assert tokens == (step + 1) * batch * block  # every batch's input_ids counted
        assert rows["train/samples"][step] == (step + 1) * batch
    # The FLOPs per token the monitor used are the measured FLOPs of one training batch.
    saved = torch.load(observed_run.runs[0] / "checkpoints" / "last.ckpt", weights_only=True)["lmforge"]
    config = dict(saved["config"])
    model = transformers.GPT2LMHeadModel(transformers.AutoConfig.for_model(config.pop("model_type"), **config))
    flops_per_token = batch_flops(model, (batch, block)) / (batch * block)
    for step, tokens_per_sec in rows["train/device/items_per_sec"].items():
        assert rows["train/device/flops_per_sec"][step] / tokens_per_sec == pytest.approx(flops_per_token)
        assert rows["train/device/samples_per_sec"][step] * block == pytest.approx(tokens_per_sec)


def test_validation_throughput_is_not_logged_at_batch_indices(observed_run):
    with open(observed_run.runs[0] / "metrics.csv") as f:
        header = f.readline()
    assert "validate/" not in header  # ThroughputMonitor would log it with the val batch index as step
