"""Backbone.init_from: a student built from a subset of a trained model's blocks (DistilBERT),
from a local HF directory or an lmforge checkpoint, for GPT-2, BERT and Llama."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from transformers import PreTrainedTokenizerBase

import lmforge
from lmforge.core.backbone import Backbone, block_list_name, build_backbone, build_config
from lmforge.core.checkpoint import check_vocabulary
from lmforge.core.data.tokenizer import TokenizerTraining, train_tokenizer
from lmforge.core.module import LanguageModel
from lmforge.plugins.objectives.masked_lm import MaskedLM

TEXT = [t for t in (Path(lmforge.__file__).parent / "data/corpus/val.txt").read_text().splitlines() if t.strip()]
ARCHS = {
    "gpt2": ("AutoModelForCausalLM", "bpe", "transformer.h",
             lambda n: {"n_layer": n, "n_embd": 32, "n_head": 2, "n_positions": 64}),
    "llama": ("AutoModelForCausalLM", "bpe", "model.layers",
              lambda n: {"num_hidden_layers": n, "hidden_size": 32, "num_attention_heads": 2, "num_key_value_heads": 2,
                         "intermediate_size": 64, "max_position_embeddings": 64}),
    "bert": ("AutoModelForMaskedLM", "wordpiece", "bert.encoder.layer",
             lambda n: {"num_hidden_layers": n, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64,
                        "max_position_embeddings": 64}),
}


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, PreTrainedTokenizerBase]:
    return {alg: train_tokenizer(TEXT, TokenizerTraining(vocab_size=300), alg) for alg in ("bpe", "wordpiece")}


def save_teacher(directory: Path, arch: str, layers: int, tokenizer: PreTrainedTokenizerBase) -> Path:
    auto, _, _, config = ARCHS[arch]
    spec = Backbone(arch, config(layers))
    model = build_backbone(spec, auto, build_config(spec, tokenizer))
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory


def blocks(model: torch.nn.Module, arch: str) -> torch.nn.ModuleList:
    return model.get_submodule(ARCHS[arch][2])


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_student_takes_every_other_block_with_embeddings_and_head(arch: str, tokenizers, tmp_path) -> None:
    auto, algorithm, block_name, _ = ARCHS[arch]
    tokenizer = tokenizers[algorithm]
    teacher_dir = save_teacher(tmp_path / "teacher", arch, 4, tokenizer)
    teacher = getattr(__import__("transformers"), auto).from_pretrained(teacher_dir, local_files_only=True)
    spec = Backbone(init_from=str(teacher_dir))
    config = build_config(spec, tokenizer)
    assert config.num_hidden_layers == 2 and config.model_type == arch
    student = build_backbone(spec, auto, config)
    assert block_list_name(student) == block_name == block_list_name(teacher)
    teacher_state, student_state = teacher.state_dict(), student.state_dict()
    prefix = block_name + "."
    for key, value in student_state.items():
        if key.startswith(prefix):
            index, rest = key[len(prefix):].split(".", 1)
            source = f"{prefix}{[0, 2][int(index)]}.{rest}"  # default: teacher blocks 0 and 2
        else:
            source = key  # embeddings, final norm, head
        assert torch.equal(value, teacher_state[source]), key
    assert len(blocks(student, arch)) == 2


def test_explicit_layers_from_an_lmforge_checkpoint(tokenizers, tmp_path) -> None:
    """The bert teacher comes from a checkpoint, as `lmforge fit --config mlm-pretrain` writes it."""
    teacher = LanguageModel(Backbone("bert", ARCHS["bert"][3](3)), MaskedLM())
    teacher.tokenizer = tokenizers["wordpiece"]
    teacher.configure_model()
    trainer = Trainer(accelerator="cpu", logger=False, max_steps=0)
    trainer.strategy.connect(teacher)
    trainer.save_checkpoint(tmp_path / "teacher.ckpt")

    spec = Backbone(init_from=str(tmp_path / "teacher.ckpt"), layers=[2, 0])  # any order, as listed
    student = build_backbone(spec, "AutoModelForMaskedLM", build_config(spec, tokenizers["wordpiece"]))
    layers = blocks(student, "bert")
    assert len(layers) == 2
    for i, kept in enumerate([2, 0]):
        for a, b in zip(layers[i].parameters(), blocks(teacher.backbone, "bert")[kept].parameters(), strict=True):
            assert torch.equal(a, b)
    batch = torch.randint(len(tokenizers["wordpiece"]), (2, 8))
    assert student(input_ids=batch).logits.shape == (2, 8, len(tokenizers["wordpiece"]))


def test_config_overrides_still_apply_but_not_to_the_layer_count(tokenizers, tmp_path) -> None:
    teacher_dir = save_teacher(tmp_path / "teacher", "gpt2", 4, tokenizers["bpe"])
    config = build_config(Backbone(init_from=str(teacher_dir), config={"resid_pdrop": 0.0}), tokenizers["bpe"])
    assert config.resid_pdrop == 0.0
    with pytest.raises(ValueError, match="model.backbone.config: must not set the layer count"):
        build_config(Backbone(init_from=str(teacher_dir), config={"n_layer": 3}), tokenizers["bpe"])


def test_errors_name_the_key(tokenizers, tmp_path) -> None:
    teacher_dir = save_teacher(tmp_path / "teacher", "gpt2", 4, tokenizers["bpe"])
    with pytest.raises(ValueError, match=r"model.backbone.layers: must list block indices .* \(0 to 3; it has 4"):
        build_config(Backbone(init_from=str(teacher_dir), layers=[0, 4]), tokenizers["bpe"])
    with pytest.raises(ValueError, match="model.backbone.layers"):
        build_config(Backbone(init_from=str(teacher_dir), layers=[]), tokenizers["bpe"])
    with pytest.raises(FileNotFoundError, match="model.backbone.init_from: .*got 'missing', which does not exist"):
        build_config(Backbone(init_from="missing"), tokenizers["bpe"])
    with pytest.raises(ValueError, match="not both"):
        build_config(Backbone(init_from=str(teacher_dir), pretrained=str(teacher_dir)), tokenizers["bpe"])
    other = train_tokenizer(TEXT, TokenizerTraining(vocab_size=280), "bpe")
    with pytest.raises(ValueError, match=r"model.backbone.init_from: .*300 tokens vs this run's 280"):
        build_config(Backbone(init_from=str(teacher_dir)), other)


def test_vocabularies_of_equal_size_but_different_tokens_are_refused(tokenizers, tmp_path) -> None:
    teacher_dir = save_teacher(tmp_path / "teacher", "gpt2", 1, tokenizers["bpe"])
    reversed_text = [" ".join(reversed(t.split())) for t in TEXT[::-1]][: len(TEXT) // 3]
    other = train_tokenizer(reversed_text, TokenizerTraining(vocab_size=300), "bpe")
    assert len(other) == len(tokenizers["bpe"]) and other.get_vocab() != tokenizers["bpe"].get_vocab()
    with pytest.raises(ValueError, match=r"teacher_key: .*both 300 tokens, but '.*' is id \d+ here and"):
        check_vocabulary(teacher_dir, other, "teacher_key")
    check_vocabulary(teacher_dir, tokenizers["bpe"], "teacher_key")  # the same tokenizer passes
