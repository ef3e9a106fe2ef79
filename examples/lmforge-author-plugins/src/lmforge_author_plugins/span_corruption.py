"""SpanCorruption: random-token span corruption of the input ids, after the span corruption of T5
(Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text Transformer").

T5 replaces spans of the input with sentinel tokens and trains the model to emit
the dropped spans. Here the spans are replaced by random vocabulary tokens in
place, and the labels are left as the objective prepared them, so any objective
keeps its targets and the model learns to predict them from a noisy context (a
denoising augmentation). Each eligible position starts a span with probability
``rate / span_length``; a span covers ``span_length`` positions, so about
``rate`` of the tokens are replaced. Padding and special tokens (document
separators, ``[CLS]``/``[SEP]``) are never replaced, nor drawn as replacements.

It works on token batches (``process_batch``, batch stage, training only) and
draws only from the step's generator. A masked LM is left out: its objective
already corrupts the input, and spans would overwrite its ``[MASK]`` tokens.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from lmforge.core.plugins import Augmenter, Batch, Host


def corrupt_spans(ids: Tensor, eligible: Tensor, rate: float, span_length: int, replacements: Tensor,
                  generator: torch.Generator) -> Tensor:
    """``ids`` with random spans of eligible positions replaced by tokens drawn uniformly from ``replacements``.

    Args:
        ids: (B, T) token ids.
        eligible: (B, T) bool, True where a token may be replaced.
        rate: Expected fraction of the eligible tokens replaced (before spans overlap).
        span_length: Positions a span covers from its start (clipped at the sequence's end).
        replacements: (R,) the token ids a replaced token is drawn from.
        generator: The only source of randomness, on ``ids``' device.

    Returns:
        A new (B, T) tensor; ``ids`` is not modified.
    """
    starts = torch.rand(ids.shape, generator=generator, device=ids.device) < rate / span_length  # (B, T)
    starts &= eligible
    covered = starts.clone()
    for offset in range(1, span_length):  # position t is covered when a span starts in (t - span_length, t]
        covered[:, offset:] |= starts[:, :-offset]
    covered &= eligible
    picks = torch.randint(len(replacements), ids.shape, generator=generator, device=ids.device)  # (B, T)
    return torch.where(covered, replacements[picks], ids)


class SpanCorruption(Augmenter):
    """Replaces random spans of training tokens with random tokens, the labels untouched (after T5, Raffel 2020).

    Args:
        rate: Expected fraction of the tokens replaced.
        span_length: Length of each replaced span, in tokens (T5: a mean of 3).
    """

    supported_objectives: ClassVar[tuple[str, ...] | None] = (
        "causal_lm", "sequence_classification", "token_classification")

    def __init__(self, rate: float = 0.15, span_length: int = 3) -> None:
        super().__init__()
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"SpanCorruption: rate must be in [0, 1], got {rate}.")
        if span_length < 1:
            raise ValueError(f"SpanCorruption: span_length must be >= 1, got {span_length}.")
        self.rate = rate
        self.span_length = span_length

    def setup(self, model: Host) -> None:
        """Model stage: the token ids to draw from and the special ids to keep, from the run's tokenizer."""
        special = sorted(set(model.tokenizer.all_special_ids))
        keep = torch.ones(len(model.tokenizer), dtype=torch.bool)
        keep[special] = False
        # Not persistent: derived from the tokenizer, so neither checkpointed nor needed on a resume.
        self.register_buffer("replacements", keep.nonzero().squeeze(1).to(model.device), persistent=False)
        self.register_buffer("special", torch.tensor(special, dtype=torch.long, device=model.device),
                             persistent=False)

    def process_batch(self, batch: Batch, generator: torch.Generator) -> Batch:
        """Batch stage, every training step: ``input_ids`` with spans replaced; the other keys as they were."""
        ids = batch["input_ids"]
        eligible = ~torch.isin(ids, self.special.to(ids.device))
        if "attention_mask" in batch:
            eligible &= batch["attention_mask"].bool()
        corrupted = corrupt_spans(ids, eligible, self.rate, self.span_length, self.replacements.to(ids.device),
                                  generator)
        return {**batch, "input_ids": corrupted}
