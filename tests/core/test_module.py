"""LanguageModel and TextData call every plugin hook at its stage.

Small test-local plugins of each kind record what they see, so these tests
pin the hook contracts that later plugins build on.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest
import torch
from host_plugins import NanAfter
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger
from tiny import TINY_BERT, TINY_GPT2, text_data, write_corpus
from torch import nn

from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining
from lmforge.core.module import LanguageModel
from lmforge.core.plugins import Augmenter, BiasMitigator, Distiller, Regularizer, StepContext
from lmforge.plugins.objectives.causal_lm import CausalLM


class DropDogs(BiasMitigator):
    """Drops documents that mention a dog; on train and val."""

    splits = ("train", "val")

    def process_text(self, examples, rng):
        keep = [i for i, t in enumerate(examples["text"]) if "dog" not in t]
        return {k: [v[i] for i in keep] for k, v in examples.items()}


class Shout(Augmenter):
    """Adds an upper-cased copy of every document (training split only)."""

    def process_text(self, examples, rng):
        return {"text": examples["text"] + [t.upper() for t in examples["text"]]}


class WeightByLength(BiasMitigator):
    """Sampling weight = document length."""

    def sample_weights(self, examples):
        return [float(len(t)) for t in examples["text"]]


class CountBatches(Augmenter):
    """Counts batch-stage calls; flips nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.devices: set[str] = set()

    def process_batch(self, batch, generator):
        self.calls += 1
        self.devices.add(str(batch["input_ids"].device))
        return batch


class ScalePenalty(Regularizer):
    """A parameter created in setup from the backbone's width, trained through its loss term."""

    def setup(self, model):
        self.scale = nn.Parameter(torch.ones(model.backbone.config.n_embd))

    def loss(self, ctx: StepContext):
        return ((self.scale - 2.0) ** 2).mean()


class HiddenProbe(Distiller):
    """Asks for hidden states and returns two named terms."""

    needs_hidden_states = True

    def loss(self, ctx: StepContext):
        h = ctx.outputs.hidden_states[-1]
        return {"a": h.pow(2).mean() * 0.0, "b": ctx.objective_loss.detach() * 0.0}


def fit(model: LanguageModel, data: TextData, tmp_path: Path, steps: int = 4) -> Trainer:
    trainer = Trainer(max_steps=steps, accelerator="cpu", logger=CSVLogger(tmp_path, name="run"),
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      log_every_n_steps=1, limit_val_batches=2, val_check_interval=steps, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=data)
    return trainer


def logged_keys(trainer: Trainer) -> set[str]:
    with open(Path(trainer.logger.log_dir) / "metrics.csv") as f:
        return set(next(csv.reader(f)))


def test_text_stage_runs_in_order_and_augmenters_skip_validation(corpus, tmp_path):
    data = text_data(corpus, tmp_path / "cache")
    model = LanguageModel(TINY_GPT2, CausalLM(), augmenters=[Shout()], bias_mitigators=[DropDogs()])
    fit(model, data, tmp_path, steps=1)
    docs = {s: [line for line in corpus[s].read_text().splitlines() if line.strip()] for s in ("train", "val")}
    kept = {s: [d for d in docs[s] if "dog" not in d] for s in docs}
    tok = data.tokenizer
    # Each document's tokens and the EOS that packing puts after it.
    n_train_tokens = sum(len(tok(d)["input_ids"]) + 1 for d in kept["train"] + [d.upper() for d in kept["train"]])
    n_val_tokens = sum(len(tok(d)["input_ids"]) + 1 for d in kept["val"])
    # The filter ran on both splits, the augmenter (after it) only on train.
    assert len(data.datasets["train"]) == n_train_tokens // 32
    assert len(data.datasets["val"]) == n_val_tokens // 32
    val_ids = data.datasets["val"].blocks.flatten().tolist()
    assert "dog" not in tok.decode(val_ids) and "dog" in " ".join(docs["val"])


def test_block_weights_are_the_mean_weight_of_their_tokens(corpus, tmp_path):
    data = text_data(corpus, tmp_path / "cache")
    model = LanguageModel(TINY_GPT2, CausalLM(), bias_mitigators=[WeightByLength()])
    fit(model, data, tmp_path, steps=1)
    assert data.train_weights is not None
    assert data.train_weights.shape == (len(data.datasets["train"]),)
    docs = [line for line in corpus["train"].read_text().splitlines() if line.strip()]
    # Every token of a document carries its weight, the EOS that packing puts after it included.
    token_weights = [float(len(d)) for d in docs for _ in range(len(data.tokenizer(d)["input_ids"]) + 1)]
    n_blocks = len(data.datasets["train"])
    expected = torch.tensor(token_weights[: n_blocks * 32], dtype=torch.double).view(n_blocks, 32).mean(1)
    torch.testing.assert_close(data.train_weights, expected)
    sampler = data.train_dataloader().sampler
    assert sampler.weights is data.train_weights  # drawn with replacement by these weights


def test_batch_stage_runs_every_training_step_only(corpus, tmp_path):
    counter = CountBatches()
    model = LanguageModel(TINY_GPT2, CausalLM(), augmenters=[counter])
    fit(model, text_data(corpus, tmp_path / "cache"), tmp_path, steps=3)
    assert counter.calls == 3  # validation batches do not pass through batch-stage plugins
    assert counter.devices == {"cpu"}


def test_plugin_parameters_from_setup_are_trained_and_checkpointed(corpus, tmp_path):
    penalty = ScalePenalty()
    model = LanguageModel(TINY_GPT2, CausalLM(), regularizers=[penalty],
                          optimizer={"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}})
    trainer = fit(model, text_data(corpus, tmp_path / "cache"), tmp_path, steps=4)
    assert float(penalty.scale.detach().mean()) > 1.0  # pulled toward 2 by its own loss term
    assert "regularizers.0.scale" in model.state_dict()
    assert {"loss/total", "loss/causal_lm", "loss/scale_penalty"} <= logged_keys(trainer)


def test_hidden_states_are_requested_and_dict_terms_are_named(corpus, tmp_path):
    model = LanguageModel(TINY_GPT2, CausalLM(), distiller=HiddenProbe())
    trainer = fit(model, text_data(corpus, tmp_path / "cache"), tmp_path, steps=2)
    assert {"loss/hidden_probe/a", "loss/hidden_probe/b"} <= logged_keys(trainer)


def test_validation_loss_is_the_token_weighted_mean(corpus, tmp_path):
    data = text_data(corpus, tmp_path / "cache")
    model = LanguageModel(TINY_GPT2, CausalLM())
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (result,) = trainer.validate(model, datamodule=data)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in data.val_dataloader():
            logits = model.backbone(input_ids=batch["input_ids"]).logits
            losses = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), batch["input_ids"][:, 1:].reshape(-1), reduction="sum")
            total += float(losses)
            count += batch["input_ids"][:, 1:].numel()
    assert result["val/loss"] == pytest.approx(total / count, rel=1e-5)
    assert result["val/perplexity"] == pytest.approx(torch.exp(torch.tensor(total / count)).item(), rel=1e-4)


def test_duplicate_plugins_are_refused():
    with pytest.raises(ValueError, match="more than once"):
        LanguageModel(TINY_GPT2, CausalLM(), regularizers=[ScalePenalty(), ScalePenalty()])


def test_block_size_beyond_positions_names_the_key(corpus, tmp_path):
    data = TextData(train=str(corpus["train"]), val=str(corpus["val"]),
                    tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=300)), block_size=128,
                    cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=r"data.block_size=128 .* 64 positions"):
        fit(LanguageModel(TINY_GPT2, CausalLM()), data, tmp_path, steps=1)


def test_weight_decay_skips_one_dimensional_parameters(corpus, tmp_path):
    model = LanguageModel(TINY_GPT2, CausalLM(),
                          optimizer={"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3, "weight_decay": 0.1}})
    fit(model, text_data(corpus, tmp_path / "cache"), tmp_path, steps=1)
    groups = model.trainer.optimizers[0].param_groups
    assert groups[0]["weight_decay"] == 0.1 and all(p.ndim >= 2 for p in groups[0]["params"])
    assert groups[1]["weight_decay"] == 0.0 and all(p.ndim < 2 for p in groups[1]["params"])
    n_params = sum(1 for p in model.parameters())
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == n_params


def test_text_stage_rng_is_seeded_per_batch(corpus, tmp_path):
    """``process_text``'s rng: the same for a batch on every run whatever the global random state, different
    for each batch of a run (not one stream, nor one seed, for all), and different under another data seed."""

    def draws(run: str, seed: int, global_seed: int) -> list[tuple[str, float]]:
        seen: list[tuple[str, float]] = []

        class Sample(Augmenter):
            def process_text(self, examples, rng: random.Random):
                seen.append((examples["text"][0], rng.random()))  # which batch (its first text), its first draw
                return examples

        random.seed(global_seed)
        torch.manual_seed(global_seed)
        data = text_data(big, tmp_path / run / "cache", seed=seed)
        fit(LanguageModel(TINY_GPT2, CausalLM(), augmenters=[Sample()]), data, tmp_path / run, steps=1)
        return seen

    # 2,500 documents: three map batches of the text stage (1,000 rows each)
    big = {"train": write_corpus(tmp_path / "big.txt", 2500, seed=3), "val": corpus["val"]}
    first = draws("a", seed=0, global_seed=1)
    assert len(first) == 3
    assert draws("b", seed=0, global_seed=2) == first  # the run's seed decides, not the global random state
    values = [value for _, value in first]
    assert len(set(values)) == len(values)  # each batch its own rng
    other = draws("c", seed=1, global_seed=1)
    assert [text for text, _ in other] == [text for text, _ in first]  # the same batches ...
    assert all(a != b for (_, a), (_, b) in zip(other, first))  # ... other draws under another seed


def test_validating_a_checkpoint_uses_its_tokenizer_not_a_retrained_one(corpus, tmp_path):
    from lmforge.plugins.objectives.masked_lm import MaskedLM

    bert = TINY_BERT
    spec = TokenizerSpec(train=TokenizerTraining(algorithm="wordpiece", vocab_size=150))
    first = TextData(train=str(corpus["train"]), val=str(corpus["val"]), tokenizer=spec, block_size=32,
                     cache_dir=str(tmp_path / "cache-a"))
    model = LanguageModel(bert, MaskedLM())
    trainer = fit(model, first, tmp_path, steps=1)
    trainer.save_checkpoint(tmp_path / "m.ckpt")

    fresh = TextData(train=str(corpus["train"]), val=str(corpus["val"]), tokenizer=spec, block_size=32,
                     cache_dir=str(tmp_path / "cache-b"))  # an empty cache would retrain (WordPiece varies)
    fresh.checkpoint_path = str(tmp_path / "m.ckpt")  # what `lmforge validate --ckpt_path` sets
    validator = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    validator.validate(LanguageModel(bert, MaskedLM()), datamodule=fresh, ckpt_path=tmp_path / "m.ckpt")
    assert fresh.tokenizer.get_vocab() == first.tokenizer.get_vocab()


def test_nonfinite_loss_stops_naming_the_term_and_step_before_the_update(corpus, tmp_path):
    from lmforge.core.module import NonFiniteLossError

    model = LanguageModel(TINY_GPT2, CausalLM(), regularizers=[NanAfter(after=2)])
    data = text_data(corpus, tmp_path / "cache")
    with pytest.raises(NonFiniteLossError, match=r"step 2: .*loss/nan_after = nan.*--ckpt_path"):
        fit(model, data, tmp_path, steps=5)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_nonfinite_loss_can_skip_batches_up_to_a_limit(corpus, tmp_path):
    from lmforge.core.module import NonFiniteLossError

    nan = NanAfter(after=1)
    model = LanguageModel(TINY_GPT2, CausalLM(), regularizers=[nan], on_nonfinite_loss="skip", max_nonfinite_skips=2)
    with pytest.raises(NonFiniteLossError, match="after skipping 2 batches"):
        fit(model, text_data(corpus, tmp_path / "cache"), tmp_path, steps=6)
    assert nan.calls == 4 and model.nonfinite_skipped == 3  # one good step, two skipped, the third stops
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_a_plugin_loss_that_is_not_a_scalar_is_named():
    class Vector(Regularizer):
        def loss(self, ctx):
            return torch.ones(3)

    from lmforge.core.module import named_terms

    with pytest.raises(TypeError, match=r"Vector.loss must return a scalar tensor .*\(3,\) for loss/vector"):
        named_terms(Vector(), Vector().loss(None))
