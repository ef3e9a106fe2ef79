"""lmforge.core.schedules.WarmupCosineLR against nanoGPT's ``get_lr`` written out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from lmforge.core.schedules import WarmupCosineLR


def reference_lr(step: int, base_lr: float, warmup: int, total: int, min_ratio: float) -> float:
    """nanoGPT's get_lr: linear warmup of (step + 1) / (warmup + 1), then cosine down to min_lr."""
    min_lr = base_lr * min_ratio
    if step < warmup:
        return base_lr * (step + 1) / (warmup + 1)
    if step > total:
        return min_lr
    decay_ratio = (step - warmup) / (total - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * decay_ratio)) * (base_lr - min_lr)


def _lrs(n_steps: int, base_lr: float = 0.5, **kwargs) -> list[float]:
    """The learning rate the optimizer uses at each of ``n_steps`` steps."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    scheduler = WarmupCosineLR(optimizer, **kwargs)
    lrs = []
    for _ in range(n_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize(("warmup", "total", "min_ratio"), [(10, 50, 0.1), (0, 20, 0.0), (3, 4, 0.5), (1, 1000, 0.3)])
def test_lr_follows_the_reference_at_every_step(warmup: int, total: int, min_ratio: float) -> None:
    lrs = _lrs(total + 5, warmup_steps=warmup, total_steps=total, min_lr_ratio=min_ratio)
    expected = [reference_lr(s, 0.5, warmup, total, min_ratio) for s in range(total + 5)]
    assert lrs == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_warmup_rises_to_the_base_rate_then_decays_to_the_floor() -> None:
    lrs = _lrs(120, base_lr=2.0, warmup_steps=10, total_steps=100, min_lr_ratio=0.1)
    warmup = lrs[:11]
    assert all(a < b for a, b in zip(warmup, warmup[1:]))  # strictly rising, from above zero
    assert lrs[0] == pytest.approx(2.0 / 11)
    assert lrs[10] == pytest.approx(2.0) and max(lrs) == pytest.approx(2.0)  # base rate at the end of warmup
    decay = lrs[10:101]
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    assert lrs[55] == pytest.approx(0.2 + 0.5 * 1.8)  # half-way down the cosine
    assert lrs[100:] == pytest.approx([0.2] * 20)  # stays at min_lr_ratio * base after total_steps


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"warmup_steps": -1, "total_steps": 10}, "lr_scheduler.init_args.warmup_steps"),
    ({"warmup_steps": 1, "total_steps": None}, "lr_scheduler.init_args.total_steps"),
    ({"warmup_steps": 1, "total_steps": 10, "min_lr_ratio": 1.5}, "lr_scheduler.init_args.min_lr_ratio"),
    ({"warmup_steps": 1, "total_steps": 10, "min_lr_ratio": -0.1}, "lr_scheduler.init_args.min_lr_ratio"),
])
def test_bad_arguments_name_the_key(kwargs: dict, key: str) -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        WarmupCosineLR(optimizer, **kwargs)
