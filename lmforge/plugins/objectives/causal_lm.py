"""Causal language modelling (Radford et al. 2018, "Improving Language Understanding by Generative
Pre-Training"): predict each next token.

Follows HF ``run_clm.py``: labels are the input ids and the shift happens in
the loss, so position t predicts token t+1. Padding (``attention_mask == 0``)
is ignored. Perplexity is exp(mean token loss).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from lmforge.core.plugins import Batch, Objective, ObjectiveOutput

IGNORE_INDEX = -100


def causal_lm_loss(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0,
                   ignore_index: int = IGNORE_INDEX) -> tuple[Tensor, Tensor]:
    """Mean shifted cross-entropy and the number of predicted tokens.

    Args:
        logits: (B, T, V) scores at each position.
        labels: (B, T) token ids; ``ignore_index`` where no loss is taken.
    """
    # Shift the labels, not the logits (as transformers' ForCausalLMLoss does): slicing the (B, T, V)
    # logits would copy them and their gradient every step, ~5 % of a small model's step on CPU.
    shift_labels = F.pad(labels[:, 1:], (0, 1), value=ignore_index).reshape(-1)  # (B*T,)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), shift_labels, ignore_index=ignore_index,
                           label_smoothing=label_smoothing)
    return loss, (shift_labels != ignore_index).sum()


class CausalLM(Objective):
    """Next-token prediction (GPT-style pre-training).

    Args:
        label_smoothing: Cross-entropy label smoothing; perplexity is still
            computed from the unsmoothed loss.
    """

    auto_model: ClassVar[str] = "AutoModelForCausalLM"
    tokenizer_algorithm: ClassVar[str] = "bpe"

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"CausalLM: label_smoothing must be in [0, 1), got {label_smoothing}.")
        self.label_smoothing = label_smoothing

    def prepare(self, batch: Batch, generator: torch.Generator) -> Batch:
        labels = batch["input_ids"]
        if "attention_mask" in batch:
            labels = labels.masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
        return {**batch, "labels": labels}

    def scored_mask(self, batch: Batch) -> Tensor:
        # Position t predicts the label at t + 1, as in `causal_lm_loss`; the last position predicts nothing.
        return F.pad(batch["labels"][:, 1:] != IGNORE_INDEX, (0, 1), value=False)  # (B, T)

    def compute(self, outputs: Any, batch: Batch) -> ObjectiveOutput:
        loss, count = causal_lm_loss(outputs.logits, batch["labels"], self.label_smoothing)
        nll = None
        if self.label_smoothing > 0:
            nll, _ = causal_lm_loss(outputs.logits.detach(), batch["labels"])
        return ObjectiveOutput(loss=loss, count=count, nll=nll)
