"""Small pieces for instruction-tuning tests: a few bundled instructions, tiny "pre-trained" gpt2 and llama
directories (random weights, an lmforge-trained tokenizer), and a quiet trainer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer
from transformers import AutoConfig, AutoModelForCausalLM

from lmforge.core.backbone import Backbone
from lmforge.core.data.files import bundled_data_dir
from lmforge.core.data.instruction_data import InstructionData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining, train_tokenizer
from lmforge.core.lora import LoraSpec
from lmforge.core.module import LanguageModel
from lmforge.plugins.objectives.causal_lm import CausalLM

ARCHS = {
    "gpt2": dict(model_type="gpt2", n_layer=2, n_embd=32, n_head=4, n_positions=128),
    "llama": dict(model_type="llama", num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128),
}
TARGETS = {"gpt2": ["c_attn"], "llama": ["q_proj", "v_proj"]}


def bundled_rows(split: str, n: int) -> list[dict[str, Any]]:
    lines = (bundled_data_dir() / "instructions" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[:n]]


def write_instructions(directory: Path, n_train: int = 48, n_val: int = 8) -> dict[str, str]:
    """The first bundled instructions as small train and val files."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, n in (("train", n_train), ("val", n_val)):
        path = directory / f"{split}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in bundled_rows(split, n)), encoding="utf-8")
        paths[split] = str(path)
    return paths


def make_base(directory: Path, arch: str, seed: int = 0, **config: Any) -> Path:
    """A tiny causal LM saved as a local HF directory with its tokenizer (trained on the bundled instructions);
    ``config`` sets more of its HF config."""
    texts = [m["content"] for row in bundled_rows("train", 400) for m in row["messages"]]
    tokenizer = train_tokenizer(texts, TokenizerTraining(vocab_size=400), "bpe")
    settings = {**ARCHS[arch], **config}
    config = AutoConfig.for_model(settings.pop("model_type"), **settings, vocab_size=len(tokenizer),
                                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory


def sft_data(files: dict[str, str], base: Path, **kwargs: Any) -> InstructionData:
    settings = dict(train=files["train"], val=files["val"], tokenizer=TokenizerSpec(path=str(base)), max_length=96,
                    batch_size=4, seed=0)
    return InstructionData(**{**settings, **kwargs})


def sft_model(base: Path, arch: str = "gpt2", lora: LoraSpec | None | bool = True, **kwargs: Any) -> LanguageModel:
    if lora is True:
        lora = LoraSpec(r=4, alpha=8, target_modules=TARGETS[arch])
    settings = dict(optimizer={"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-2, "weight_decay": 0.1}})
    return LanguageModel(Backbone(architecture=None, pretrained=str(base), lora=lora or None),
                         kwargs.pop("objective", CausalLM()), **{**settings, **kwargs})


def quiet_trainer(steps: int, **kwargs: Any) -> Trainer:
    settings = dict(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                    num_sanity_val_steps=0)
    return Trainer(**{**settings, **kwargs})
