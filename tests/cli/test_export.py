"""`lmforge export` writes an HF directory that reproduces the trained model's logits offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from lmforge.cli.export import export_checkpoint
from lmforge.core.backbone import Backbone
from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining
from lmforge.core.module import LanguageModel
from lmforge.plugins.objectives.causal_lm import CausalLM
from lmforge.plugins.objectives.masked_lm import MaskedLM

CASES = {
    "gpt2": (Backbone("gpt2", {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64}), CausalLM,
             AutoModelForCausalLM, "bpe"),
    "llama": (Backbone("llama", {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2,
                                 "num_key_value_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64}),
              CausalLM, AutoModelForCausalLM, "bpe"),
    "bert": (Backbone("bert", {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2,
                               "intermediate_size": 64, "max_position_embeddings": 64}),
             MaskedLM, AutoModelForMaskedLM, "wordpiece"),
}


@pytest.mark.parametrize("arch", sorted(CASES))
def test_export_round_trips_logits(arch: str, corpus: dict[str, Path], tmp_path: Path) -> None:
    backbone, objective, auto, algorithm = CASES[arch]
    data = TextData(train=str(corpus["train"]), val=str(corpus["val"]), block_size=32, batch_size=4,
                    tokenizer=TokenizerSpec(train=TokenizerTraining(algorithm=algorithm, vocab_size=300)),
                    cache_dir=str(tmp_path / "cache"))
    model = LanguageModel(backbone, objective())
    trainer = Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    trainer.save_checkpoint(tmp_path / "model.ckpt")

    out = export_checkpoint(tmp_path / "model.ckpt", tmp_path / "hf")
    assert (out / "model.safetensors").is_file()
    exported = auto.from_pretrained(out, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    text = "the cat sat on a mat."
    assert tokenizer(text)["input_ids"] == data.tokenizer(text)["input_ids"]

    batch = next(iter(data.val_dataloader()))["input_ids"]
    model.eval()
    with torch.no_grad():
        expected = model.backbone(input_ids=batch).logits
        actual = exported(input_ids=batch).logits
    torch.testing.assert_close(actual, expected)


def test_export_refuses_a_non_lmforge_checkpoint(tmp_path: Path) -> None:
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not an lmforge checkpoint"):
        export_checkpoint(tmp_path / "other.ckpt", tmp_path / "hf")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        export_checkpoint(tmp_path / "missing.ckpt", tmp_path / "hf")


def test_exported_causal_lm_continues_a_prompt_also_from_an_old_checkpoint(corpus: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    """The exported tokenizer adds no EOS to a prompt, so ``pipeline("text-generation")`` continues it; a checkpoint
    whose saved tokenizer appends EOS to every text (lmforge's bpe before tokenizer format 2) is exported so too."""
    from tokenizers import Tokenizer, processors
    from transformers import pipeline

    backbone, objective, auto, algorithm = CASES["gpt2"]
    data = TextData(train=str(corpus["train"]), val=str(corpus["val"]), block_size=32, batch_size=4,
                    tokenizer=TokenizerSpec(train=TokenizerTraining(algorithm=algorithm, vocab_size=300)),
                    cache_dir=str(tmp_path / "cache"))
    trainer = Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(LanguageModel(backbone, objective()), datamodule=data)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    checkpoint = torch.load(tmp_path / "model.ckpt", weights_only=True)
    old = Tokenizer.from_str(checkpoint["lmforge"]["tokenizer"])
    eos = "<|endoftext|>"
    old.post_processor = processors.TemplateProcessing(single=f"$A {eos}", pair=f"$A {eos} $B:1 {eos}:1",
                                                       special_tokens=[(eos, old.token_to_id(eos))])
    checkpoint["lmforge"]["tokenizer"] = old.to_str()
    torch.save(checkpoint, tmp_path / "old.ckpt")
    prompt = "the cat sat"
    for name in ("model.ckpt", "old.ckpt"):
        out = export_checkpoint(tmp_path / name, tmp_path / f"hf-{name}")
        tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
        ids = tokenizer(prompt)["input_ids"]
        assert ids == tokenizer.convert_tokens_to_ids(tokenizer.tokenize(prompt)), name
        model = auto.from_pretrained(out, local_files_only=True).eval()
        with torch.no_grad():  # reference: the next token by hand, from the prompt's own tokens
            following = int(model(torch.tensor([ids])).logits[0, -1].argmax())
        generated = pipeline("text-generation", model=str(out), device="cpu")(prompt, max_new_tokens=1,
                                                                            do_sample=False)[0]["generated_text"]
        assert generated == prompt + tokenizer.decode([following]), name
