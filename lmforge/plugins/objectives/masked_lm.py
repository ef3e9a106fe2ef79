"""Masked language modelling (BERT; Devlin et al. 2019).

Each step draws a fresh mask on the device: ``mask_probability`` (15 %) of
the non-special tokens are selected; of those 80 % become ``[MASK]``, 10 %
a random regular token and 10 % stay unchanged. Labels are the original ids
at selected positions and -100 elsewhere. With ``whole_word_masking``,
selection is per word (a WordPiece word and its ``##`` continuation pieces).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from lmforge.core.plugins import Batch, Host, Objective, ObjectiveOutput

IGNORE_INDEX = -100


def mask_tokens(
    input_ids: Tensor,
    special: Tensor,
    mask_token_id: int,
    regular_ids: Tensor,
    generator: torch.Generator,
    mask_probability: float = 0.15,
    replace_probability: float = 0.8,
    random_probability: float = 0.1,
    word_start: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT masking of ``input_ids`` (B, T).

    Args:
        special: (B, T) True where a token is special (never selected).
        regular_ids: Ids a "random" replacement is drawn from.
        word_start: (B, T) True where a word begins; selects whole words.

    Returns:
        The masked ids and the labels (original id where selected, else -100).
    """
    B, T = input_ids.shape
    draw = torch.rand((B, T), generator=generator, device=input_ids.device)
    if word_start is not None:
        # A word's pieces share the draw of the word's first piece.
        word_index = torch.cumsum(word_start.long(), dim=1) - 1  # (B, T), -1 before the first word
        word_draw = torch.rand((B, T), generator=generator, device=input_ids.device)
        draw = torch.gather(word_draw, 1, word_index.clamp(min=0))
    selected = (draw < mask_probability) & ~special
    labels = input_ids.masked_fill(~selected, IGNORE_INDEX)
    action = torch.rand((B, T), generator=generator, device=input_ids.device)
    to_mask = selected & (action < replace_probability)
    to_random = selected & (action >= replace_probability) & (action < replace_probability + random_probability)
    random_ids = regular_ids[torch.randint(len(regular_ids), (B, T), generator=generator, device=input_ids.device)]
    masked = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    masked = torch.where(to_random, random_ids, masked)
    return masked, labels


class MaskedLM(Objective):
    """Masked-token prediction (BERT-style pre-training) with a fresh mask each step.

    Args:
        mask_probability: Share of non-special tokens (or words) selected.
        whole_word_masking: Select whole words rather than single pieces.
        label_smoothing: Cross-entropy label smoothing on the selected tokens.
    """

    auto_model: ClassVar[str] = "AutoModelForMaskedLM"
    tokenizer_algorithm: ClassVar[str] = "wordpiece"
    metric_names: ClassVar[tuple[str, ...]] = ("accuracy",)

    def __init__(self, mask_probability: float = 0.15, whole_word_masking: bool = False,
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 < mask_probability <= 1.0:
            raise ValueError(f"MaskedLM: mask_probability must be in (0, 1], got {mask_probability}.")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"MaskedLM: label_smoothing must be in [0, 1), got {label_smoothing}.")
        self.mask_probability = mask_probability
        self.whole_word_masking = whole_word_masking
        self.label_smoothing = label_smoothing
        self.mask_token_id = -1
        # Filled in `setup` from the tokenizer; buffers follow the model to its device.
        self.register_buffer("special_ids", torch.zeros(0, dtype=torch.long), persistent=False)
        self.register_buffer("regular_ids", torch.zeros(0, dtype=torch.long), persistent=False)
        self.register_buffer("is_continuation", torch.zeros(0, dtype=torch.bool), persistent=False)

    def setup(self, model: Host) -> None:
        tokenizer = model.tokenizer
        if tokenizer.mask_token_id is None:
            raise ValueError("MaskedLM: the tokenizer has no mask token; train a wordpiece tokenizer or use one with [MASK].")
        device = next(model.backbone.parameters()).device
        self.mask_token_id = tokenizer.mask_token_id
        special = sorted(set(tokenizer.all_special_ids))
        vocab = len(tokenizer)
        self.special_ids = torch.tensor(special, dtype=torch.long, device=device)
        self.regular_ids = torch.tensor([i for i in range(vocab) if i not in set(special)], dtype=torch.long, device=device)
        pieces = tokenizer.convert_ids_to_tokens(list(range(vocab)))
        # WordPiece marks the pieces that continue a word with "##".
        self.is_continuation = torch.tensor([p.startswith("##") for p in pieces], dtype=torch.bool, device=device)
        if self.whole_word_masking and not bool(self.is_continuation.any()):
            raise ValueError(
                "MaskedLM: whole_word_masking needs a WordPiece tokenizer (pieces marked '##'); "
                "set data.tokenizer.train.algorithm: wordpiece or whole_word_masking: false."
            )

    def prepare(self, batch: Batch, generator: torch.Generator) -> Batch:
        ids = batch["input_ids"]
        special = torch.isin(ids, self.special_ids)
        if "attention_mask" in batch:
            special = special | (batch["attention_mask"] == 0)
        word_start = (~self.is_continuation[ids] | special) if self.whole_word_masking else None
        masked, labels = mask_tokens(ids, special, self.mask_token_id, self.regular_ids, generator,
                                     self.mask_probability, word_start=word_start)
        return {**batch, "input_ids": masked, "labels": labels}

    def compute(self, outputs: Any, batch: Batch) -> ObjectiveOutput:
        labels = batch["labels"].reshape(-1)
        selected = labels != IGNORE_INDEX
        logits = outputs.logits.reshape(-1, outputs.logits.shape[-1])[selected].float()  # (N, V), masked only
        targets = labels[selected]
        count = selected.sum()
        if targets.numel() == 0:  # nothing selected in this batch: a zero loss that keeps the graph
            zero = outputs.logits.sum() * 0.0
            return ObjectiveOutput(loss=zero, count=count, metrics={"accuracy": (zero.detach(), count)})
        loss = F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        nll = F.cross_entropy(logits.detach(), targets) if self.label_smoothing > 0 else None
        accuracy = (logits.detach().argmax(-1) == targets).float().mean()
        return ObjectiveOutput(loss=loss, count=count, nll=nll, metrics={"accuracy": (accuracy, count)})
