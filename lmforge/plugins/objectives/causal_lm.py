"""Causal language modelling (Radford et al. 2018, "Improving Language Understanding by Generative
Pre-Training"): predict each next token.

Follows HF ``run_clm.py``: labels are the input ids and the shift happens in
the loss, so position t predicts token t+1. Padding (``attention_mask == 0``)
is ignored. Perplexity is exp(mean token loss).

Instruction tuning (``InstructionData``): the batch brings its own ``labels``,
the response tokens' ids and -100 elsewhere, so the loss, its count, the
validation loss and the scored positions that distillers and R-Drop compare
are the response tokens only. A packed batch brings ``position_ids``; the
forward then gets the block-diagonal mask that keeps its examples apart
(`lmforge.core.data.instruction_layout.model_inputs`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from lmforge.core.data.instruction_layout import model_inputs as instruction_inputs
from lmforge.core.plugins import Batch, Host, Objective, ObjectiveOutput

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
        self._mask_dtype = torch.float32

    def setup(self, model: Host) -> None:
        # A packed batch's additive mask must be in the dtype the attention computes in (bf16-true models).
        self._mask_dtype = next(model.backbone.parameters()).dtype

    def prepare(self, batch: Batch, generator: torch.Generator) -> Batch:
        if "labels" in batch:  # the data labels what is learned (instruction tuning: the responses)
            return batch
        labels = batch["input_ids"]
        if "attention_mask" in batch:
            labels = labels.masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
        return {**batch, "labels": labels}

    def model_inputs(self, batch: Batch) -> dict[str, Tensor]:
        if "position_ids" in batch:  # packed examples: positions restart, and attention stays in each example
            return instruction_inputs(batch, self._mask_dtype)
        return super().model_inputs(batch)

    def scored_mask(self, batch: Batch) -> Tensor:
        # Position t predicts the label at t + 1, as in `causal_lm_loss`; the last position predicts nothing.
        return F.pad(batch["labels"][:, 1:] != IGNORE_INDEX, (0, 1), value=False)  # (B, T)

    def compute(self, outputs: Any, batch: Batch) -> ObjectiveOutput:
        loss, count = causal_lm_loss(outputs.logits, batch["labels"], self.label_smoothing)
        nll = None
        if self.label_smoothing > 0:
            nll, _ = causal_lm_loss(outputs.logits.detach(), batch["labels"])
        return ObjectiveOutput(loss=loss, count=count, nll=nll)
