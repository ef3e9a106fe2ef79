"""Local Hugging Face model directories as users save them beforehand (no download), for the tests of tests/core."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from lmforge.core.data.tokenizer import TokenizerTraining, train_tokenizer


def save_gpt2_dir(out: Path) -> Path:
    """A GPT-2 (1 block, 16 wide, 32 positions, dropout 0.1) and its byte-level BPE tokenizer, saved in ``out``."""
    texts = ["the cat sat on the mat and the dog ran to the park"] * 50
    tokenizer = train_tokenizer(texts, TokenizerTraining(vocab_size=300), "bpe")
    config = GPT2Config(vocab_size=len(tokenizer), n_layer=1, n_embd=16, n_head=2, n_positions=32,
                        resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
