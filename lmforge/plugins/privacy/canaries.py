"""Memorization probe: canaries and their exposure (Carlini et al. 2019, "The Secret Sharer:
Evaluating and Testing Unintended Memorization in Neural Networks", USENIX Security).

A *canary* is a sentence of a fixed format with a random secret, "my secret code is 7 3 1 9 0 2",
inserted into the training data a given number of times. After training, every candidate secret of the
format is scored by the model's log-perplexity, ``Px(s) = -log2 Pr(s | model)`` (Sec. 4.1), and the
canary's *exposure* is (Definition 4)::

    exposure = log2 |R| - log2 rank(secret)

where ``R`` is the space of candidate secrets and the rank is the secret's position among all candidates
sorted by log-perplexity, 1 being the most likely. A secret the model has not seen ranks about in the
middle (exposure around 1); one it has memorized ranks first (exposure ``log2 |R|``).

Two ways to compute it, and results say which one they used (`Exposure.method`):

* ``exact``: every candidate is scored (Sec. 4.2's enumeration), feasible when ``|R|`` is small; see
  `exact_limit` in `measure_exposure` and benchmarks/canary_scoring.py for the cost.
* ``extrapolated``: a random sample of candidates is scored and a skew-normal distribution is fitted to
  their log-perplexities (Sec. 4.3, "Approximating exposure"); the rank is ``|R|`` times the fitted
  distribution's CDF at the secret's log-perplexity (at least 1). An estimate, good to a bit or so.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

Method = Literal["exact", "extrapolated"]


@dataclass(frozen=True)
class CanaryFormat:
    """A canary sentence with a secret of ``digits`` random digits.

    Args:
        template: The sentence; ``{secret}`` marks where the secret goes.
        digits: Number of digits of the secret; the candidate space has ``10 ** digits`` secrets.
        separator: Written between digits ("7 3 1" with a space, so a BPE tokenizer sees each digit as
            a token, as the paper's character-level and word-level models do), or between groups.
        groups: Digits per group, adding up to ``digits``: the digits of a group are written together and
            groups are joined by ``separator`` (``(3, 4)`` with a space: "555 2671", as a phone number is
            written). None: every digit on its own.
    """

    template: str = "my secret code is {secret}"
    digits: int = 6
    separator: str = " "
    groups: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.template.count("{secret}") != 1:
            raise ValueError(f"CanaryFormat: template must contain {{secret}} exactly once, got {self.template!r}.")
        if not 1 <= self.digits <= 12:
            raise ValueError(f"CanaryFormat: digits must be in 1..12, got {self.digits}.")
        if self.groups is not None:
            object.__setattr__(self, "groups", tuple(self.groups))  # a list from a recipe: keep the format hashable
            if not self.groups or any(g < 1 for g in self.groups) or sum(self.groups) != self.digits:
                raise ValueError(f"CanaryFormat: groups must be positive numbers of digits adding up to digits "
                                 f"({self.digits}), got {list(self.groups)}.")

    @property
    def space_size(self) -> int:
        """``|R|``: how many secrets the format admits."""
        return 10 ** self.digits

    def render(self, secret: int) -> str:
        """The canary sentence of the secret numbered ``secret`` (0 <= secret < `space_size`)."""
        if not 0 <= secret < self.space_size:
            raise ValueError(f"CanaryFormat: secret must be in [0, {self.space_size}), got {secret}.")
        digits = f"{secret:0{self.digits}d}"
        if self.groups is None:
            return self.template.replace("{secret}", self.separator.join(digits))
        starts = [sum(self.groups[:i]) for i in range(len(self.groups))]
        parts = [digits[start:start + size] for start, size in zip(starts, self.groups)]
        return self.template.replace("{secret}", self.separator.join(parts))

    def to_dict(self) -> dict[str, Any]:
        return {"template": self.template, "digits": self.digits, "separator": self.separator,
                "groups": list(self.groups) if self.groups is not None else None}


@dataclass(frozen=True)
class Canary:
    """A secret of a format and the number of times it goes into the training data."""

    secret: int
    repetitions: int
    format: CanaryFormat

    @property
    def text(self) -> str:
        return self.format.render(self.secret)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (kept in checkpoints and ``canaries.json``); `Canary.from_dict` reads them back."""
        return {"secret": self.secret, "repetitions": self.repetitions, **self.format.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Canary:
        groups = data.get("groups")
        fmt = CanaryFormat(data["template"], int(data["digits"]), data.get("separator", " "),
                           tuple(groups) if groups is not None else None)
        return cls(int(data["secret"]), int(data["repetitions"]), fmt)


def make_canaries(repetitions: Sequence[int], fmt: CanaryFormat, rng: random.Random) -> list[Canary]:
    """One canary per entry of ``repetitions``, with distinct secrets drawn from ``rng``."""
    if len(repetitions) > fmt.space_size:
        raise ValueError(f"make_canaries: {len(repetitions)} canaries do not fit {fmt.space_size} secrets.")
    secrets: list[int] = []
    while len(secrets) < len(repetitions):
        secret = rng.randrange(fmt.space_size)
        if secret not in secrets:
            secrets.append(secret)
    return [Canary(s, r, fmt) for s, r in zip(secrets, repetitions)]


def insert_canaries(documents: Sequence[str], canaries: Sequence[Canary], rng: random.Random) -> list[str]:
    """``documents`` with each canary added ``repetitions`` times as a document of its own, at positions
    drawn from ``rng``; the original documents keep their order."""
    copies = [c.text for c in canaries for _ in range(c.repetitions)]
    rng.shuffle(copies)
    positions = sorted(rng.randrange(len(documents) + 1) for _ in copies)
    out, last = [], 0
    for position, text in zip(positions, copies):
        out.extend(documents[last:position])
        out.append(text)
        last = position
    out.extend(documents[last:])
    return out


def exposure_from_rank(rank: float, space_size: int) -> float:
    """``log2 |R| - log2 rank`` (Definition 4)."""
    if not 1 <= rank <= space_size:
        raise ValueError(f"exposure_from_rank: rank must be in [1, {space_size}], got {rank}.")
    return math.log2(space_size) - math.log2(rank)


def rank_among(secret_score: float, candidate_scores: torch.Tensor) -> int:
    """The secret's rank among candidates by log-perplexity: 1 + how many other candidates score lower.

    ``candidate_scores`` may include the secret's own score (it is not counted: it is not lower than
    itself); ties count in the secret's favour.
    """
    return 1 + int((candidate_scores < secret_score).sum())


def skew_normal_rank(secret_score: float, sample_scores: torch.Tensor, space_size: int) -> float:
    """The paper's extrapolated rank: ``|R|`` times the CDF, at the secret's score, of a skew-normal
    distribution fitted (maximum likelihood, SciPy) to the log-perplexities of sampled candidates; at least 1."""
    try:
        from scipy.stats import skewnorm
    except ImportError as exc:
        raise ImportError("exposure: the extrapolated estimate fits a skew-normal distribution with SciPy, which is "
                          "not installed. Install lmforge[privacy], or score every candidate (method: exact).") from exc
    a, loc, scale = skewnorm.fit(sample_scores.double().cpu().numpy())
    return max(1.0, space_size * float(skewnorm.cdf(secret_score, a, loc=loc, scale=scale)))


@torch.no_grad()
def log_perplexities(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], batch_size: int = 512,
                     context_token_id: int | None = None) -> torch.Tensor:
    """``Px(s) = -log2 Pr(s | model)`` of each text, in bits, under a causal LM.

    Args:
        model: A causal LM returning ``logits`` (B, T, V); it is put in eval mode for the call.
        tokenizer: A Hugging Face tokenizer; texts are tokenized without special tokens.
        texts: The sequences to score.
        batch_size: Sequences per forward pass.
        context_token_id: A token put before each text so that its first token is predicted too (an
            end-of-text token, as between packed training documents). None: the first token is not
            scored, which leaves ranks unchanged when all texts start with the same token.

    Returns:
        A float64 tensor of one log-perplexity per text.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    if context_token_id is not None:
        ids = [[context_token_id, *seq] for seq in ids]
    out = torch.empty(len(ids), dtype=torch.float64)
    try:
        for start in range(0, len(ids), batch_size):
            chunk = ids[start:start + batch_size]
            longest = max(len(seq) for seq in chunk)
            input_ids = torch.zeros(len(chunk), longest, dtype=torch.long)
            mask = torch.zeros(len(chunk), longest, dtype=torch.long)
            for i, seq in enumerate(chunk):
                input_ids[i, :len(seq)] = torch.tensor(seq)
                mask[i, :len(seq)] = 1
            input_ids, mask = input_ids.to(device), mask.to(device)
            logits = model(input_ids=input_ids, attention_mask=mask).logits.float()  # (B, T, V)
            logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None])[..., 0]  # (B, T-1)
            nats = -(logp * mask[:, 1:]).sum(dim=1)
            out[start:start + len(chunk)] = (nats / math.log(2)).double().cpu()
    finally:
        model.train(was_training)
    return out


@dataclass(frozen=True)
class Exposure:
    """A canary's exposure and how it was computed.

    Attributes:
        exposure: ``log2 |R| - log2 rank``, in bits.
        rank: The secret's rank (an estimate, possibly fractional, when ``method`` is ``extrapolated``).
        space_size: ``|R|``.
        method: ``exact`` (every candidate scored) or ``extrapolated`` (a skew-normal fitted to a sample).
        candidates_scored: How many candidates were scored.
        log_perplexity: The secret's log-perplexity, in bits.
    """

    exposure: float
    rank: float
    space_size: int
    method: Method
    candidates_scored: int
    log_perplexity: float


def measure_exposure(model: torch.nn.Module, tokenizer: Any, canary: Canary, exact_limit: int = 100_000,
                     samples: int = 10_000, rng: random.Random | None = None, batch_size: int = 512,
                     context_token_id: int | None = None) -> Exposure:
    """The exposure of ``canary`` under ``model``; see `measure_exposures` for the arguments."""
    return measure_exposures(model, tokenizer, [canary], exact_limit, samples, rng, batch_size, context_token_id)[0]


def measure_exposures(model: torch.nn.Module, tokenizer: Any, canaries: Sequence[Canary], exact_limit: int = 100_000,
                      samples: int = 10_000, rng: random.Random | None = None, batch_size: int = 512,
                      context_token_id: int | None = None) -> list[Exposure]:
    """The exposure of each canary under ``model``, in order.

    The candidates of a format are scored once for all the canaries of that format: every secret of the
    space when it holds at most ``exact_limit`` (each canary's rank is then exact, its own secret among the
    others), otherwise ``samples`` random candidates (other than the canaries' secrets) to which the
    skew-normal is fitted.

    Args:
        model: A causal LM (see `log_perplexities`).
        tokenizer: Its tokenizer.
        canaries: The canaries; each one's format defines its candidate space.
        exact_limit: Score every candidate when the space holds at most this many; otherwise extrapolate
            from ``samples`` random candidates.
        samples: Candidates scored for the extrapolated estimate.
        rng: The source of the sampled candidates (required when extrapolating).
        batch_size: Sequences per forward pass.
        context_token_id: See `log_perplexities`.
    """
    out: list[Exposure | None] = [None] * len(canaries)
    by_format: dict[CanaryFormat, list[int]] = {}
    for i, canary in enumerate(canaries):
        by_format.setdefault(canary.format, []).append(i)
    for fmt, members in by_format.items():
        if fmt.space_size <= exact_limit:
            scores = log_perplexities(model, tokenizer, [fmt.render(s) for s in range(fmt.space_size)], batch_size,
                                      context_token_id)
            for i in members:
                secret_score = float(scores[canaries[i].secret])
                rank = rank_among(secret_score, scores)  # the secret's own score is not lower than itself
                out[i] = Exposure(exposure_from_rank(rank, fmt.space_size), rank, fmt.space_size, "exact",
                                  fmt.space_size - 1, secret_score)
            continue
        if rng is None:
            raise ValueError("measure_exposure: the candidate space exceeds exact_limit, so candidates are sampled, "
                             "and rng must be given.")
        secrets = {canaries[i].secret for i in members}
        others = [s for s in (rng.randrange(fmt.space_size) for _ in range(samples)) if s not in secrets]
        scores = log_perplexities(model, tokenizer, [fmt.render(s) for s in others], batch_size, context_token_id)
        secret_scores = log_perplexities(model, tokenizer, [canaries[i].text for i in members], batch_size,
                                         context_token_id)
        for i, secret_score in zip(members, secret_scores.tolist()):
            rank = skew_normal_rank(secret_score, scores, fmt.space_size)
            out[i] = Exposure(exposure_from_rank(rank, fmt.space_size), rank, fmt.space_size, "extrapolated",
                              len(scores), secret_score)
    return [e for e in out if e is not None]
