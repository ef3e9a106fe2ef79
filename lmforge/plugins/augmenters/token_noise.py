"""Token noise: replace, mask or delete random tokens of each training batch, on
the device, with a fresh draw every step (input noising as in Xie et al. 2017,
"Data Noising as Smoothing in Neural Network Language Models"; token deletion
and masking as in BART's noising functions, Lewis et al. 2020).

Each non-special, non-padding token is, independently, deleted with
probability ``delete_probability``, else replaced by a random regular token
with probability ``replace_probability``, else replaced by the mask token with
probability ``mask_probability``. Replacing and masking change the inputs
only: the labels the objective prepared stay as they were (the model learns
to predict the clean text from a noisy context). Deleting removes the token
and its label; the rest of the row shifts left, and the freed positions at
the end are padding: ``input_ids`` = the tokenizer's pad id,
``attention_mask`` = 0, ``labels`` = -100 (and 0 in any other (B, T) tensor),
so the shapes of packed fixed-length blocks are kept and padding is never
scored.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lmforge.core.plugins import Augmenter, Batch, Host

IGNORE_INDEX = -100


def noise_tokens(
    input_ids: Tensor,
    eligible: Tensor,
    generator: torch.Generator,
    replace_probability: float,
    mask_probability: float,
    delete_probability: float,
    regular_ids: Tensor,
    mask_token_id: int | None,
) -> tuple[Tensor, Tensor]:
    """Draw the noise for ``input_ids`` (B, T).

    Args:
        eligible: (B, T) True where a token may be noised.
        regular_ids: Ids a replacement is drawn from.

    Returns:
        The ids with replacements and masks applied, and (B, T) True where a
        token is to be deleted.
    """
    draw = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    deleted = eligible & (draw < delete_probability)
    replace_end = delete_probability + replace_probability
    replaced = eligible & (draw >= delete_probability) & (draw < replace_end)
    masked = eligible & (draw >= replace_end) & (draw < replace_end + mask_probability)
    index = torch.randint(len(regular_ids), input_ids.shape, generator=generator, device=input_ids.device)
    ids = torch.where(replaced, regular_ids[index], input_ids)
    if mask_token_id is not None:
        ids = ids.masked_fill(masked, mask_token_id)
    return ids, deleted


def delete_positions(tensor: Tensor, deleted: Tensor, fill: int) -> Tensor:
    """Remove the ``deleted`` positions of each row of ``tensor`` (B, T), shift the rest left
    keeping their order, and fill the freed positions at the end with ``fill``."""
    order = torch.argsort(deleted.to(torch.int8), dim=1, stable=True)  # kept positions first, in order
    shifted = torch.gather(tensor, 1, order)
    n_kept = (~deleted).sum(dim=1, keepdim=True)  # (B, 1)
    positions = torch.arange(tensor.shape[1], device=tensor.device).expand_as(tensor)
    return shifted.masked_fill(positions >= n_kept, fill)


class TokenNoise(Augmenter):
    """Replaces, masks or deletes a fraction of the non-special tokens of each training batch, fresh every step.

    Args:
        replace_probability: Share of tokens replaced by a random regular token.
        mask_probability: Share of tokens replaced by the tokenizer's mask token.
        delete_probability: Share of tokens deleted (the row shifts left and
            ends in padding that is not scored).
    """

    def __init__(self, replace_probability: float = 0.1, mask_probability: float = 0.0,
                 delete_probability: float = 0.0) -> None:
        super().__init__()
        rates = {"replace_probability": replace_probability, "mask_probability": mask_probability,
                 "delete_probability": delete_probability}
        for key, value in rates.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"TokenNoise: {key} must be in [0, 1], got {value}.")
        if sum(rates.values()) > 1.0:
            raise ValueError(f"TokenNoise: the probabilities must add up to at most 1, got {rates}.")
        self.replace_probability = replace_probability
        self.mask_probability = mask_probability
        self.delete_probability = delete_probability
        self.mask_token_id: int | None = None
        self.pad_token_id = 0
        # Filled in `setup` from the tokenizer; buffers follow the model to its device.
        self.register_buffer("special_ids", torch.zeros(0, dtype=torch.long), persistent=False)
        self.register_buffer("regular_ids", torch.zeros(0, dtype=torch.long), persistent=False)

    def setup(self, model: Host) -> None:
        tokenizer = model.tokenizer
        if self.mask_probability > 0 and tokenizer.mask_token_id is None:
            raise ValueError("TokenNoise: mask_probability > 0 needs a tokenizer with a mask token; set "
                             "mask_probability: 0 or use a tokenizer that has one (lmforge-trained ones do).")
        if self.delete_probability > 0 and tokenizer.pad_token_id is None:
            raise ValueError("TokenNoise: delete_probability > 0 needs a tokenizer with a pad token to fill the "
                             "freed positions; set delete_probability: 0 or use a tokenizer that has one.")
        device = next(model.backbone.parameters()).device
        special = set(tokenizer.all_special_ids)
        self.mask_token_id = tokenizer.mask_token_id
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.special_ids = torch.tensor(sorted(special), dtype=torch.long, device=device)
        self.regular_ids = torch.tensor([i for i in range(len(tokenizer)) if i not in special],
                                        dtype=torch.long, device=device)

    def process_batch(self, batch: Batch, generator: torch.Generator) -> Batch:
        ids = batch["input_ids"]
        eligible = ~torch.isin(ids, self.special_ids)
        if "attention_mask" in batch:
            eligible = eligible & (batch["attention_mask"] != 0)
        noised, deleted = noise_tokens(ids, eligible, generator, self.replace_probability, self.mask_probability,
                                       self.delete_probability, self.regular_ids, self.mask_token_id)
        out = {**batch, "input_ids": noised}
        if self.delete_probability == 0:
            return out
        out.setdefault("attention_mask", torch.ones_like(ids))
        fills = {"input_ids": self.pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX}
        for key, value in out.items():
            if isinstance(value, Tensor) and value.shape == ids.shape:
                out[key] = delete_positions(value, deleted, fills.get(key, 0))
        return out
