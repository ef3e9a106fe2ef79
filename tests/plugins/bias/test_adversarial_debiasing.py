"""AdversarialDebiasing: the gradient-reversal layer, attributes found in the tokens, and an adversary that is
trained, logged and checkpointed with the model."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import CSVLogger
from transformers import GPT2Config, GPT2LMHeadModel

from lmforge.core.backbone import Backbone
from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining, train_tokenizer
from lmforge.core.module import LanguageModel
from lmforge.core.plugins import StepContext
from lmforge.plugins.bias.adversarial_debiasing import (
    AdversarialDebiasing,
    document_segments,
    gradient_reversal,
    segment_attributes,
    segment_mean,
)
from lmforge.plugins.objectives.causal_lm import CausalLM

TEXTS = ["He ran home and he sang", "She ran home and she sang", "He and she ran", "The dog ran home",
         "His dog sang", "Her cat ran"] * 20


def setup_plugin(plugin: AdversarialDebiasing) -> SimpleNamespace:
    tokenizer = train_tokenizer(TEXTS, TokenizerTraining(vocab_size=300, min_frequency=1), "bpe")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_embd=16, n_head=2, n_positions=32,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    backbone = GPT2LMHeadModel(config).eval()  # no dropout: runs compared with each other see the same network
    model = SimpleNamespace(backbone=backbone, tokenizer=tokenizer, objective=CausalLM(), device=torch.device("cpu"))
    plugin.setup(model)  # type: ignore[arg-type]
    return model


def encode(tokenizer, texts: list[str]) -> dict[str, torch.Tensor]:
    ids = tokenizer(texts, padding=True, return_tensors="pt")
    return {"input_ids": ids["input_ids"], "attention_mask": ids["attention_mask"]}


def test_gradient_reversal_is_identity_forward_and_scales_the_gradient() -> None:
    x = torch.randn(4, 3, requires_grad=True)
    y = gradient_reversal(x, 0.7)
    assert torch.equal(y, x)
    (y * torch.arange(3.0)).sum().backward()
    torch.testing.assert_close(x.grad, -0.7 * torch.arange(3.0).expand(4, 3))


def test_encoder_gradient_is_minus_lambda_times_the_plain_gradient() -> None:
    lam = 0.3
    plugin = AdversarialDebiasing(reversal_weight=lam, adversary_hidden=8)
    model = setup_plugin(plugin)
    batch = encode(model.tokenizer, ["He ran home and he sang", "She ran home", "The dog ran", "Her cat ran home"])

    metrics: dict[str, torch.Tensor] = {}

    def run(reversed_: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        model.backbone.zero_grad()
        plugin.zero_grad()
        outputs = model.backbone(**batch, output_hidden_states=True)
        if reversed_:
            out = plugin.loss(StepContext(batch, outputs, torch.tensor(0.0), model.objective, forward=model))
            loss = out.terms
            metrics.update(out.metrics)
        else:  # the same term written plainly, without the reversal layer
            ids = batch["input_ids"]
            keep = batch["attention_mask"].bool() & (plugin.token_group[ids] < 0)
            hidden = outputs.hidden_states[-1]
            pooled = (hidden * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)
            target = torch.tensor([0, 1, -1, 1])  # male, female, no attribute word, female
            loss = F.cross_entropy(plugin.adversary(pooled[target >= 0]), target[target >= 0])
        loss.backward()
        encoder = [p.grad.clone() for p in model.backbone.parameters() if p.grad is not None]
        adversary = [p.grad.clone() for p in plugin.adversary.parameters()]
        return encoder, adversary

    encoder_grl, adversary_grl = run(True)
    encoder_plain, adversary_plain = run(False)
    assert len(encoder_grl) == len(encoder_plain) > 0
    for g, p in zip(encoder_grl, encoder_plain):
        torch.testing.assert_close(g, -lam * p)
    for g, p in zip(adversary_grl, adversary_plain):  # the adversary itself descends its loss
        torch.testing.assert_close(g, p)
    assert set(metrics) == {"accuracy"} and 0.0 <= float(metrics["accuracy"]) <= 1.0


def test_each_document_of_a_packed_block_is_an_example() -> None:
    eos = 9
    token_group = torch.tensor([-1, 0, 1, -1, 0, -1, -1, -1, -1, -1])  # 1 and 4: male words, 2: a female word
    ids = torch.tensor([[1, 3, 9, 2, 3, 9, 3, 3],    # male doc | female doc | doc without attribute words
                        [1, 2, 3, 9, 4, 3, 3, 0],    # mixed doc | male doc, then padding
                        [3, 3, 3, 3, 3, 3, 3, 2]])   # one doc whose only female word is under padding
    valid = torch.ones_like(ids, dtype=torch.bool)
    valid[1, 7] = valid[2, 7] = False
    segments = document_segments(ids, eos)
    assert segments.tolist() == [[0, 0, 0, 1, 1, 1, 2, 2], [0, 0, 0, 0, 1, 1, 1, 1], [0] * 8]
    target = segment_attributes(ids, segments, token_group, 2, valid)
    assert target[:, :3].tolist() == [[0, 1, -1], [-1, 0, -1], [-1, -1, -1]]
    assert (target[:, 3:] == -1).all()
    hidden = torch.arange(3 * 8 * 2, dtype=torch.float).view(3, 8, 2)
    pooled, counts = segment_mean(hidden, segments, valid)
    torch.testing.assert_close(pooled[0, 1], hidden[0, 3:6].mean(0))
    torch.testing.assert_close(pooled[1, 1], hidden[1, 4:7].mean(0))
    assert counts[1].tolist()[:3] == [4.0, 3.0, 0.0]


def test_masked_attribute_words_are_recovered_from_the_labels() -> None:
    plugin = AdversarialDebiasing(adversary_hidden=0)
    model = setup_plugin(plugin)
    batch = encode(model.tokenizer, ["She ran home", "She ran home"])
    she = batch["input_ids"][0, 0].item()
    assert plugin.token_group[she] == 1
    masked = batch["input_ids"].clone()
    masked[:, 0] = model.tokenizer.pad_token_id  # as if MLM had replaced "she" by [MASK]
    labels = torch.full_like(masked, -100)
    labels[0, 0] = she  # only the first row keeps the original in its labels
    masked_batch = {**batch, "input_ids": masked, "labels": labels}
    outputs = model.backbone(input_ids=masked, output_hidden_states=True)
    plugin.loss(StepContext(masked_batch, outputs, torch.tensor(0.0), model.objective, forward=model))
    ids = torch.where(labels != -100, labels, masked)
    assert plugin.examples(masked_batch, ids, batch["attention_mask"].bool())[1][:, 0].tolist() == [1, -1]


def test_a_missing_label_key_is_named() -> None:
    plugin = AdversarialDebiasing(label_key="gender", num_groups=2)
    model = setup_plugin(plugin)
    batch = encode(model.tokenizer, ["She ran"])
    outputs = model.backbone(**batch, output_hidden_states=True)
    keys = r"\['attention_mask', 'input_ids'\]"
    with pytest.raises(KeyError, match=rf"label_key='gender' is not in the batch, whose keys are {keys}"):
        plugin.loss(StepContext(batch, outputs, torch.tensor(0.0), model.objective, forward=model))
    with pytest.raises(ValueError, match="num_groups"):
        AdversarialDebiasing(label_key="gender")
    labeled = {**batch, "gender": torch.tensor([1])}
    loss = plugin.loss(StepContext(labeled, outputs, torch.tensor(0.0), model.objective, forward=model)).terms
    assert loss.ndim == 0 and loss.item() > 0


def test_the_adversary_is_trained_logged_and_checkpointed(corpus: dict[str, Path], tmp_path: Path) -> None:
    data = TextData(train=str(corpus["train"]), val=str(corpus["val"]), block_size=16, batch_size=8, seed=0,
                    tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=400)), cache_dir=str(tmp_path / "c"))
    plugin = AdversarialDebiasing(adversary_hidden=8)
    model = LanguageModel(Backbone("gpt2", {"n_layer": 1, "n_embd": 16, "n_head": 2, "n_positions": 32}),
                          CausalLM(), bias_mitigators=[plugin])
    snapshot = Snapshot()
    trainer = Trainer(max_steps=3, accelerator="cpu", logger=CSVLogger(tmp_path, name="run"), callbacks=[snapshot],
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      log_every_n_steps=1, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    trained = plugin.adversary.state_dict()
    assert any(not torch.equal(trained[k], v) for k, v in snapshot.initial.items())
    with open(Path(trainer.logger.log_dir) / "metrics.csv") as f:
        keys = set(next(csv.reader(f)))
    assert {"loss/adversarial_debiasing", "metric/adversarial_debiasing/accuracy"} <= keys
    assert not any(k.startswith("loss/") and k not in ("loss/total", "loss/causal_lm", "loss/adversarial_debiasing")
                   for k in keys)  # the logged terms are exactly the terms of loss/total
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    state = torch.load(tmp_path / "model.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    torch.testing.assert_close(state["bias_mitigators.0.adversary.0.weight"], trained["0.weight"])


class Snapshot(Callback):
    """Copies the adversary's weights when training starts (it is built in configure_model)."""

    def on_train_start(self, trainer: Trainer, pl_module: LanguageModel) -> None:
        adversary = pl_module.bias_mitigators[0].adversary
        self.initial = {k: v.clone() for k, v in adversary.state_dict().items()}
