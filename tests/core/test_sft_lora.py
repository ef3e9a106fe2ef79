"""Instruction tuning with LoRA through the real trainer: only adapters train and are optimized, the base stays
bitwise unchanged, checkpoints hold the adapters and the base's fingerprint, resume is exact, exports (merged
and adapter-only) load offline with the same logits, and LoRA composes with each plugin kind."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from peft import PeftModel
from safetensors.torch import load_file, save_file
from sft_fixtures import TARGETS, make_base, quiet_trainer, sft_data, sft_model, write_instructions
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmforge.cli.export import export_checkpoint
from lmforge.core.backbone import Backbone
from lmforge.core.checkpoint import CKPT_KEY, LORA_KEY
from lmforge.core.data.instruction import DEFAULT_CHAT_TEMPLATE
from lmforge.core.lora import LoraSpec
from lmforge.core.module import LanguageModel
from lmforge.plugins.augmenters.token_noise import TokenNoise
from lmforge.plugins.bias.probe import BiasProbe, score_pairs
from lmforge.plugins.distillation.logit_distillation import LogitDistillation
from lmforge.plugins.regularizers.l2_penalty import L2Penalty


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return write_instructions(tmp_path_factory.mktemp("instructions"))


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bases")
    return {arch: make_base(root / arch, arch) for arch in ("gpt2", "llama")}


class Losses(Callback):
    def __init__(self) -> None:
        self.by_step: dict[int, float] = {}
        self.terms: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.by_step[trainer.global_step] = float(outputs["loss"])
        self.terms.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("loss/")})


def base_weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


def adapted_name(name: str) -> str:
    """Where an adapted layer's weight is in the model with adapters: ``...c_attn.base_layer.weight``."""
    module, _, tensor = name.rpartition(".")
    return f"{module}.base_layer.{tensor}"


def trained(base: Path, files: dict[str, str], arch: str = "gpt2", steps: int = 3, **kwargs) -> LanguageModel:
    model = sft_model(base, arch, **kwargs)
    quiet_trainer(steps).fit(model, datamodule=sft_data(files, base))
    return model


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_only_the_adapters_train_and_the_base_stays_bitwise_unchanged(arch: str, bases: dict[str, Path],
                                                                      files: dict[str, str], caplog) -> None:
    saved = base_weights(bases[arch])
    with caplog.at_level(logging.INFO, logger="lmforge.core.backbone"):
        model = trained(bases[arch], files, arch)
    state = model.backbone.state_dict()
    for name, value in saved.items():  # an adapted layer keeps its weights under ``base_layer``
        assert torch.equal(state[name] if name in state else state[adapted_name(name)], value), name
    lora_b = [v for k, v in state.items() if ".lora_B." in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # B starts at 0: the adapters did train
    # Reference counts: each adapted layer adds A (r x in) and B (out x r); the base's tensors from its file.
    layers = [m for n, m in model.backbone.named_modules() if n.rsplit(".", 1)[-1] in TARGETS[arch]]
    adapter = sum(4 * (m.in_features + m.out_features) for m in layers)
    total = adapter + sum(v.numel() for v in saved.values())
    assert f"training {adapter:,} of {total:,} parameters" in caplog.text


def test_the_optimizer_holds_state_for_the_adapters_only(bases: dict[str, Path], files: dict[str, str]) -> None:
    model = sft_model(bases["gpt2"])
    trainer = quiet_trainer(2)
    trainer.fit(model, datamodule=sft_data(files, bases["gpt2"]))
    adapters = {id(p) for n, p in model.backbone.named_parameters() if ".lora_" in n}
    optimizer = trainer.optimizers[0]
    in_groups = {id(p) for group in optimizer.param_groups for p in group["params"]}
    with_state = {id(p) for p in optimizer.state}
    assert adapters and in_groups == adapters and with_state == adapters


def test_a_checkpoint_holds_the_adapters_the_base_fingerprint_and_the_chat_template(
        bases: dict[str, Path], files: dict[str, str], tmp_path: Path) -> None:
    base = bases["gpt2"]
    sizes = {}
    for lora in (True, None):
        model = sft_model(base, lora=lora)
        trainer = quiet_trainer(1)
        trainer.fit(model, datamodule=sft_data(files, base))
        trainer.save_checkpoint(tmp_path / f"{lora}.ckpt")
        sizes[lora] = (tmp_path / f"{lora}.ckpt").stat().st_size
    checkpoint = torch.load(tmp_path / "True.ckpt", weights_only=True)
    assert sorted(checkpoint["state_dict"]) == sorted(
        f"backbone.transformer.h.{i}.attn.c_attn.lora_{ab}.default.weight" for i in (0, 1) for ab in "AB")
    record = checkpoint[CKPT_KEY][LORA_KEY]
    assert record["spec"]["r"] == 4 and record["spec"]["target_modules"] == ["c_attn"]
    assert record["base"]["pretrained"] == str(base.resolve())
    # Reference: SHA-256 over the weight file's name and bytes.
    digest = hashlib.sha256(b"model.safetensors\0" + (base / "model.safetensors").read_bytes()).hexdigest()
    assert record["base"]["fingerprint"] == "sha256:" + digest
    assert checkpoint[CKPT_KEY]["tokenizer_config"]["chat_template"] == DEFAULT_CHAT_TEMPLATE
    full = torch.load(tmp_path / "None.ckpt", weights_only=True)
    assert sizes[True] < sizes[None] / 3, sizes  # the adapters and their AdamW moments only
    assert LORA_KEY not in full[CKPT_KEY]


def run_to(base: Path, files: dict[str, str], root: Path, max_steps: int, ckpt_path: str | None = None) -> Losses:
    seed_everything(3)
    model = sft_model(base, lora=LoraSpec(r=4, alpha=8, dropout=0.2, target_modules=["c_attn"]),
                      augmenters=[TokenNoise(replace_probability=0.2)])
    model_dir = root / "ckpt"
    losses = Losses()
    trainer = quiet_trainer(max_steps, enable_checkpointing=True, callbacks=[
        losses, ModelCheckpoint(dirpath=model_dir, every_n_train_steps=1, save_top_k=-1, filename="{step}")])
    trainer.fit(model, datamodule=sft_data(files, base), ckpt_path=ckpt_path)
    losses.adapters = {k: v.clone() for k, v in model.backbone.state_dict().items() if ".lora_" in k}
    return losses


def test_resume_is_exact(bases: dict[str, Path], files: dict[str, str], tmp_path: Path) -> None:
    whole = run_to(bases["gpt2"], files, tmp_path / "whole", 8)  # 48 examples / 4: crosses no epoch; 8 steps
    run_to(bases["gpt2"], files, tmp_path / "part", 3)
    resumed = run_to(bases["gpt2"], files, tmp_path / "part", 8, str(tmp_path / "part" / "ckpt" / "step=3.ckpt"))
    assert sorted(resumed.by_step) == [4, 5, 6, 7, 8]
    assert [resumed.by_step[s] for s in range(4, 9)] == [whole.by_step[s] for s in range(4, 9)]  # bitwise
    assert all(torch.equal(resumed.adapters[k], v) for k, v in whole.adapters.items())


@pytest.fixture(scope="module")
def lora_checkpoint(bases: dict[str, Path], files: dict[str, str], tmp_path_factory) -> Path:
    model = sft_model(bases["gpt2"])
    trainer = quiet_trainer(2)
    trainer.fit(model, datamodule=sft_data(files, bases["gpt2"]))
    path = tmp_path_factory.mktemp("lora") / "last.ckpt"
    trainer.save_checkpoint(path)
    return path


def validate(model: LanguageModel, base: Path, files: dict[str, str], ckpt: Path) -> None:
    quiet_trainer(1, limit_val_batches=1).validate(model, datamodule=sft_data(files, base), ckpt_path=str(ckpt))


def test_validating_from_a_lora_checkpoint_rebuilds_the_trained_model(bases, files, lora_checkpoint) -> None:
    model = sft_model(bases["gpt2"])
    validate(model, bases["gpt2"], files, lora_checkpoint)
    saved = torch.load(lora_checkpoint, weights_only=True)["state_dict"]
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items())


def test_a_checkpoint_is_refused_on_another_base(bases, files, lora_checkpoint, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    for f in bases["gpt2"].iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    weights = base_weights(other)
    weights["transformer.wte.weight"][0, 0] += 1.0
    save_file(weights, str(other / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="model.backbone.pretrained: the checkpoint's adapters were trained on"):
        validate(sft_model(other), other, files, lora_checkpoint)


@pytest.mark.parametrize("lora, message", [
    (LoraSpec(r=8, alpha=8, target_modules=["c_attn"]), "r: 4 in the checkpoint, 8 here"),
    (None, "the checkpoint holds LoRA adapters"),
])
def test_a_checkpoint_is_refused_with_other_lora_settings(bases, files, lora_checkpoint, lora, message) -> None:
    with pytest.raises(ValueError, match=message):
        validate(sft_model(bases["gpt2"], lora=lora), bases["gpt2"], files, lora_checkpoint)


def test_lora_settings_the_model_cannot_take_are_refused_naming_the_key(bases) -> None:
    with pytest.raises(ValueError, match="model.backbone.lora: LoRA adapts a trained model .*pretrained must be set"):
        Backbone(architecture="gpt2", lora=LoraSpec())
    with pytest.raises(ValueError, match="model.backbone_lr_scale must be 1 with model.backbone.lora"):
        sft_model(bases["gpt2"], backbone_lr_scale=0.1)


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(ids).logits


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_exports_merged_and_adapter_only_load_offline_with_the_trained_logits(arch, bases, files, tmp_path) -> None:
    base = bases[arch]
    model = sft_model(base, arch)
    trainer = quiet_trainer(3)
    trainer.fit(model, datamodule=sft_data(files, base))
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    ids = torch.arange(5, 29).reshape(2, 12)
    expected = logits(model.backbone, ids)
    assert not torch.allclose(expected, logits(AutoModelForCausalLM.from_pretrained(base), ids), atol=1e-4)

    export_checkpoint(tmp_path / "last.ckpt", tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", local_files_only=True)
    assert not any("lora" in type(m).__name__.lower() for m in merged.modules())
    torch.testing.assert_close(logits(merged, ids), expected, rtol=1e-5, atol=1e-5)

    export_checkpoint(tmp_path / "last.ckpt", tmp_path / "adapter", adapter_only=True)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (tmp_path / "adapter").iterdir()}
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, local_files_only=True),
                                        tmp_path / "adapter")
    torch.testing.assert_close(logits(adapted, ids), expected, rtol=1e-5, atol=1e-5)
    for directory in ("merged", "adapter"):
        tokenizer = AutoTokenizer.from_pretrained(tmp_path / directory, local_files_only=True)
        assert tokenizer.chat_template == DEFAULT_CHAT_TEMPLATE


def test_a_tied_output_layer_in_modules_to_save_survives_checkpoint_and_both_exports(bases, files, tmp_path) -> None:
    base = bases["gpt2"]
    lora = LoraSpec(r=4, alpha=8, target_modules=TARGETS["gpt2"], modules_to_save=["lm_head"])
    model = sft_model(base, lora=lora)
    trainer = quiet_trainer(3)
    trainer.fit(model, datamodule=sft_data(files, base))
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    ids = torch.arange(5, 29).reshape(2, 12)
    expected = logits(model.backbone, ids)
    head = model.backbone.get_output_embeddings().modules_to_save["default"].weight
    assert head is model.backbone.get_input_embeddings().modules_to_save["default"].weight
    assert not torch.equal(head, base_weights(base)["transformer.wte.weight"])  # the tied matrix trained

    restored = sft_model(base, lora=lora)
    validate(restored, base, files, tmp_path / "last.ckpt")
    torch.testing.assert_close(logits(restored.backbone, ids), expected, rtol=0, atol=0)
    export_checkpoint(tmp_path / "last.ckpt", tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", local_files_only=True)
    assert merged.lm_head.weight is merged.transformer.wte.weight
    torch.testing.assert_close(logits(merged, ids), expected, rtol=1e-5, atol=1e-5)
    export_checkpoint(tmp_path / "last.ckpt", tmp_path / "adapter", adapter_only=True)
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, local_files_only=True),
                                        tmp_path / "adapter")
    torch.testing.assert_close(logits(adapted, ids), expected, rtol=1e-5, atol=1e-5)


def test_export_refuses_adapter_only_for_a_model_trained_without_lora(bases, files, tmp_path) -> None:
    model = sft_model(bases["gpt2"], lora=None)
    trainer = quiet_trainer(1)
    trainer.fit(model, datamodule=sft_data(files, bases["gpt2"]))
    trainer.save_checkpoint(tmp_path / "full.ckpt")
    with pytest.raises(ValueError, match="--adapter-only: .* holds no LoRA adapters"):
        export_checkpoint(tmp_path / "full.ckpt", tmp_path / "out", adapter_only=True)


# -- LoRA with each plugin kind -----------------------------------------------------------------------


def composed_run(base: Path, files: dict[str, str], steps: int = 2, callbacks=(), **plugins) -> tuple[LanguageModel,
                                                                                                       Losses]:
    model = sft_model(base, **plugins)
    losses = Losses()
    # Every step a logging step: Losses reads each step's terms from callback_metrics.
    trainer = quiet_trainer(steps, callbacks=[losses, *callbacks], limit_val_batches=1, val_check_interval=steps,
                            log_every_n_steps=1)
    trainer.fit(model, datamodule=sft_data(files, base))
    return model, losses


def adapters_moved_and_base_kept(model: LanguageModel, base: Path) -> bool:
    state = model.backbone.state_dict()
    kept = all(torch.equal(state[name] if name in state else state[adapted_name(name)], value)
               for name, value in base_weights(base).items())
    return kept and any(v.abs().sum() > 0 for k, v in state.items() if ".lora_B." in k)


class AdapterPenalty(Callback):
    """Reference: 0.5 * the sum of squares of the adapters' weights when the first step starts (B = 0, A random)."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_step == 0:
            self.first = 0.5 * sum(float((p ** 2).sum()) for n, p in module.backbone.named_parameters() if ".lora_" in n)


def test_lora_with_a_regularizer_penalizes_the_adapters_only(bases, files) -> None:
    reference = AdapterPenalty()
    model, losses = composed_run(bases["gpt2"], files, steps=1, callbacks=[reference],
                                 regularizers=[L2Penalty(weight=0.5)])
    assert losses.terms[0]["loss/l2_penalty"] == pytest.approx(reference.first, rel=1e-5)
    assert adapters_moved_and_base_kept(model, bases["gpt2"])


def test_lora_with_an_augmenter(bases, files) -> None:
    model, losses = composed_run(bases["gpt2"], files, augmenters=[TokenNoise(replace_probability=0.3)])
    assert all(torch.isfinite(torch.tensor(list(t.values()))).all() for t in losses.terms)
    assert adapters_moved_and_base_kept(model, bases["gpt2"])


def test_lora_student_with_its_base_as_frozen_teacher(files, tmp_path: Path) -> None:
    # Without dropout, the student (trained) and the teacher (eval mode) compute the same at the first step.
    base = make_base(tmp_path / "base", "gpt2", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model, losses = composed_run(base, files, steps=3, distiller=LogitDistillation(teacher=str(base)))
    # At the first step the student is its base (B = 0): nothing to distil. Afterwards it has moved away.
    assert losses.terms[0]["loss/logit_distillation"] == pytest.approx(0.0, abs=1e-6)
    assert losses.terms[-1]["loss/logit_distillation"] > 1e-6
    teacher = model.distiller._teacher.model
    assert not any(p.requires_grad for p in teacher.parameters())
    assert torch.equal(teacher.transformer.wte.weight, base_weights(base)["transformer.wte.weight"])  # untouched
    assert adapters_moved_and_base_kept(model, base)


def test_lora_with_the_bias_probe_scores_the_adapted_model(bases, files) -> None:
    probe = BiasProbe()
    model, _ = composed_run(bases["gpt2"], files, callbacks=[probe])
    pairs = probe.pairs[:20]
    adapted = score_pairs(model.backbone, model.tokenizer, pairs, "causal")
    base = score_pairs(AutoModelForCausalLM.from_pretrained(bases["gpt2"]), model.tokenizer, pairs, "causal")
    assert probe.result.more[:20] == pytest.approx(adapted.more, rel=1e-6)
    assert probe.result.more[:20] != pytest.approx(base.more, rel=1e-6)
    assert adapters_moved_and_base_kept(model, bases["gpt2"])
