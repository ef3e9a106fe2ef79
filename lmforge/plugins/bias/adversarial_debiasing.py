"""Adversarial debiasing (Zhang et al. 2018, "Mitigating Unwanted Biases with
Adversarial Learning"; Elazar & Goldberg 2018, "Adversarial Removal of
Demographic Attributes from Text Data") with a gradient-reversal layer
(Ganin & Lempitsky 2015).

An adversary head reads the pooled hidden states of each example and predicts
its protected attribute. Its cross-entropy is added to the loss through a
gradient-reversal layer: identity forward, gradient times -lambda backward.
So one backward pass trains the adversary to predict the attribute (its
parameters descend the cross-entropy) while the encoder ascends it, learning
to hide the attribute.

An example is either a row with a label in a batch column (``label_key``,
an integer group id, negative = unknown) or, in packed language-model blocks
that have no label, each document of a block (documents end at the
tokenizer's EOS token): its attribute is the group whose attribute words
occur in its tokens, and documents with no attribute word or with words of
several groups are left out of the adversary's loss. Attribute-word
positions are left out of the pooling (``exclude_attribute_tokens``), so
the adversary must find the attribute in the context rather than read the
word itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from lmforge.core.plugins import BiasMitigator, Host, LossOutput, StepContext
from lmforge.plugins.bias.wordlists import GENDER_TERMS, read_attribute_terms

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


IGNORE_INDEX = -100


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: float) -> Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.weight * grad, None


def gradient_reversal(x: Tensor, weight: float) -> Tensor:
    """Identity in the forward pass; multiplies the gradient by ``-weight`` in the backward pass."""
    return _GradientReversal.apply(x, weight)


def document_segments(input_ids: Tensor, boundary_id: int | None) -> Tensor:
    """(B, T) index of the document each position belongs to within its row; a boundary token (EOS) closes
    its document. Without a boundary token every row is one document."""
    if boundary_id is None:
        return torch.zeros_like(input_ids)
    ends = (input_ids == boundary_id).long()
    return torch.cumsum(ends, dim=1) - ends


def segment_mean(hidden: Tensor, segments: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Mean of ``hidden`` (B, T, H) per (row, segment) over the positions where ``mask`` is True.

    Returns:
        (B, T, H) means (slot s of a row holds its segment s) and (B, T) position counts.
    """
    H = hidden.shape[-1]
    weight = mask.to(hidden.dtype)  # (B, T)
    sums = torch.zeros_like(hidden).scatter_add(1, segments.unsqueeze(-1).expand(-1, -1, H), hidden * weight[..., None])
    counts = torch.zeros_like(weight).scatter_add(1, segments, weight)  # (B, T)
    return sums / counts.clamp(min=1.0)[..., None], counts


def segment_attributes(input_ids: Tensor, segments: Tensor, token_group: Tensor, n_groups: int,
                       valid: Tensor) -> Tensor:
    """(B, T) group of each (row, segment): the one group whose attribute tokens occur in it, else -1.

    Args:
        input_ids: (B, T) token ids.
        segments: (B, T) segment index of each position (``document_segments``).
        token_group: (V,) group index of each token id, -1 for other tokens.
        n_groups: Number of groups.
        valid: (B, T) True at real (non-padding) positions.
    """
    groups = token_group[input_ids].masked_fill(~valid, -1)  # (B, T)
    hits = F.one_hot(groups.clamp(min=0), n_groups) * (groups >= 0)[..., None]  # (B, T, K)
    present = torch.zeros_like(hits).scatter_add(1, segments.unsqueeze(-1).expand(-1, -1, n_groups), hits) > 0
    single = present.sum(-1) == 1  # (B, T)
    return torch.where(single, present.long().argmax(-1), torch.full_like(segments, -1))


def token_groups(tokenizer: PreTrainedTokenizerBase, rows: tuple[tuple[str, ...], ...]) -> tuple[Tensor, int]:
    """(V,) group of each token id that spells a whole attribute word (-1 elsewhere), and how many words have one.

    Each word is tried lower-case, capitalized and upper-case after a space (byte-level BPE marks word
    starts), and capitalized or upper-case without one (a document's first word). A lower-case word without a
    space is left out: in byte-level BPE that token is also a piece inside other words ("he" in "s|he").
    Only forms that are a single token count; a token claimed by two groups is dropped.
    """
    table = torch.full((len(tokenizer),), -1, dtype=torch.long)
    claimed: dict[int, int] = {}
    covered = 0
    for row in rows:
        for group, word in enumerate(row):
            found = False
            upper, capitalized = word.upper(), word.capitalize()
            for text in (" " + word, " " + capitalized, " " + upper, capitalized, upper):
                ids = tokenizer.encode(text, add_special_tokens=False)
                if len(ids) == 1:
                    found = True
                    claimed[ids[0]] = group if claimed.get(ids[0], group) == group else -2
            covered += found
    for token, group in claimed.items():
        table[token] = max(group, -1)
    return table, covered


class AdversarialDebiasing(BiasMitigator):
    """An adversary predicts the protected attribute from pooled hidden states; gradient reversal hides it.

    Args:
        reversal_weight: lambda: the encoder receives -lambda times the
            adversary's gradient.
        adversary_hidden: Width of the adversary's hidden layer; 0 makes it
            linear.
        attribute_terms: Attribute lists (tab-separated, one column per group)
            from which the attribute of a block is found.
        groups: Names of the attribute lists' columns (default: the file's
            ``# groups:`` line).
        label_key: A batch column with the attribute as an integer group id
            (negative = unknown); when set, it is used instead of the words.
        num_groups: Number of attribute values when ``label_key`` is set.
        layer: Which hidden state to pool (-1 = the last layer).
        exclude_attribute_tokens: Leave attribute-word positions out of the
            pooling.
        warmup_steps: Raise lambda linearly from 0 over this many training
            steps, so that the language model and the adversary learn before
            the encoder is pushed (as Ganin et al. 2016 ramp it up).
    """

    needs_hidden_states = True

    def __init__(self, reversal_weight: float = 1.0, adversary_hidden: int = 128,
                 attribute_terms: list[str] | None = None, groups: list[str] | None = None,
                 label_key: str | None = None, num_groups: int | None = None, layer: int = -1,
                 exclude_attribute_tokens: bool = True, warmup_steps: int = 0) -> None:
        super().__init__()
        if reversal_weight < 0:
            raise ValueError(f"AdversarialDebiasing: reversal_weight must be >= 0, got {reversal_weight}.")
        if adversary_hidden < 0:
            raise ValueError(f"AdversarialDebiasing: adversary_hidden must be >= 0, got {adversary_hidden}.")
        if label_key is not None and (num_groups is None or num_groups < 2):
            raise ValueError(
                f"AdversarialDebiasing: with label_key={label_key!r}, num_groups must be the number of attribute "
                f"values (at least 2), got {num_groups}."
            )
        if warmup_steps < 0:
            raise ValueError(f"AdversarialDebiasing: warmup_steps must be >= 0, got {warmup_steps}.")
        self.reversal_weight = reversal_weight
        self.warmup_steps = warmup_steps
        self.adversary_hidden = adversary_hidden
        self.label_key = label_key
        self.layer = layer
        self.exclude_attribute_tokens = exclude_attribute_tokens
        self.terms = read_attribute_terms(attribute_terms or [GENDER_TERMS], "AdversarialDebiasing.attribute_terms",
                                          groups)
        self.num_groups = num_groups if label_key is not None else len(self.terms.groups)
        self.adversary: nn.Module | None = None
        self.boundary_id: int | None = None
        self.register_buffer("token_group", torch.zeros(0, dtype=torch.long), persistent=False)

    def setup(self, model: Host) -> None:
        config = model.backbone.config
        width = getattr(config, "hidden_size", None) or model.backbone.get_input_embeddings().embedding_dim
        if self.adversary_hidden:
            self.adversary = nn.Sequential(nn.Linear(width, self.adversary_hidden), nn.ReLU(),
                                           nn.Linear(self.adversary_hidden, self.num_groups))
        else:
            self.adversary = nn.Linear(width, self.num_groups)
        device = next(model.backbone.parameters()).device
        self.adversary.to(device)
        self.boundary_id = model.tokenizer.eos_token_id
        table, covered = token_groups(model.tokenizer, self.terms.rows)
        self.token_group = table.to(device)
        n_words = sum(len(row) for row in self.terms.rows)
        if covered == 0 and self.label_key is None:
            raise ValueError(
                "AdversarialDebiasing: no attribute word of "
                f"{', '.join(map(str, self.terms.paths))} is a single token of this tokenizer; "
                "use a larger vocabulary (data.tokenizer.train.vocab_size) or set label_key."
            )
        rank_zero_info(f"AdversarialDebiasing: {covered} of {n_words} attribute words are single tokens")

    def current_weight(self, step: int) -> float:
        """lambda at training step ``step`` (after the warm-up: ``reversal_weight``)."""
        if self.warmup_steps == 0:
            return self.reversal_weight
        return self.reversal_weight * min(1.0, step / self.warmup_steps)

    def examples(self, batch: dict[str, Tensor], ids: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T) segment of each position and (B, T) attribute of each (row, segment) slot, -1 where unknown.

        With ``label_key`` each row is one example labeled by its column; otherwise each document of a row.
        """
        if self.label_key is None:
            segments = document_segments(ids, self.boundary_id)
            return segments, segment_attributes(ids, segments, self.token_group, self.num_groups, valid)
        if self.label_key not in batch:
            raise KeyError(
                f"AdversarialDebiasing: label_key={self.label_key!r} is not in the batch, whose keys are "
                f"{sorted(batch)}. Set label_key to the attribute column of a labeled dataset, or null to find "
                "the attribute from its words."
            )
        labels = batch[self.label_key].long().reshape(-1)  # (B,)
        target = torch.full_like(ids, -1)
        target[:, 0] = labels.masked_fill(labels < 0, -1)
        return torch.zeros_like(ids), target

    def loss(self, ctx: StepContext) -> LossOutput:
        batch = ctx.batch
        ids = batch["input_ids"]
        if "labels" in batch and batch["labels"].shape == ids.shape:
            # MLM replaced some inputs by [MASK]; their labels hold the original tokens.
            ids = torch.where(batch["labels"] != IGNORE_INDEX, batch["labels"], ids)
        valid = batch["attention_mask"].bool() if "attention_mask" in batch else torch.ones_like(ids, dtype=torch.bool)
        segments, target = self.examples(batch, ids, valid)  # (B, T), (B, T)
        pool_mask = valid & (self.token_group[ids] < 0) if self.exclude_attribute_tokens else valid
        hidden = ctx.outputs.hidden_states[self.layer].float()  # (B, T, H)
        pooled, counts = segment_mean(hidden, segments, pool_mask)  # (B, T, H), (B, T)
        known = (target >= 0) & (counts > 0)
        if not bool(known.any()):  # no example with a single attribute: a zero that keeps the graph
            return LossOutput(sum(p.sum() for p in self.adversary.parameters()) * 0.0 + hidden.sum() * 0.0)
        weight = self.current_weight(ctx.step)
        logits = self.adversary(gradient_reversal(pooled[known], weight))  # (N, K)
        loss = F.cross_entropy(logits, target[known])
        accuracy = (logits.detach().argmax(-1) == target[known]).float().mean()
        # The term is the adversary's cross-entropy (loss/adversarial_debiasing); its accuracy is a metric
        # (metric/adversarial_debiasing/accuracy): near chance once the encoder hides the attribute.
        return LossOutput(loss, metrics={"accuracy": accuracy})
