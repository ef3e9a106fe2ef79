"""The non-finite loss guard, kept on the device: a NaN or infinite loss never reaches the weights, and the
host reads nothing for it on a step that does not log.

Reading the loss on the host every step (``bool(torch.isfinite(loss))``) waits for every queued kernel, so on
a GPU the host can never run ahead of the device. Instead each step records on the device whether its loss
is finite, and the optimizer skips a bad update on the device, the way torch's ``GradScaler`` makes it skip:
optimizers whose step supports it (``optimizer._step_supports_amp_scaling``: the fused Adam, AdamW, SGD and
Adagrad, on CPU and CUDA) read ``optimizer.found_inf`` (a float tensor, 1.0 = skip) and then leave the
parameters, their state and the step count exactly as they were. The guard keeps on the device the number of
bad steps, the first one, and each loss term's value at it; `NonFiniteGuard.read` brings them to the host at
the moments that read tensors anyway (logging steps, before a checkpoint is written, the end of fit).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor
from torch.distributed.tensor import DTensor


def can_skip_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step`` honours ``optimizer.found_inf`` (torch's fused implementations do).

    Not over sharded (DTensor) parameters: the fused kernels take ``found_inf`` as a plain tensor and refuse to
    mix it with DTensors, so FSDP2 runs keep the per-step check.
    """
    if not getattr(optimizer, "_step_supports_amp_scaling", False):
        return False
    return not any(isinstance(p, DTensor) for group in optimizer.param_groups for p in group["params"])


@dataclasses.dataclass
class NonFinite:
    """What `NonFiniteGuard.read` found since the previous read.

    Attributes:
        step: The global step of the first non-finite loss.
        terms: Each loss term's value at that step, by log name (``causal_lm``, ``r_drop/kl``).
        count: How many steps had a non-finite loss.
        last: Whether the latest recorded step was one of them.
    """

    step: int
    terms: dict[str, float]
    count: int
    last: bool


class NonFiniteGuard:
    """Device-side record of non-finite losses between two reads (see the module docstring)."""

    def __init__(self) -> None:
        self._count: Tensor | None = None  # bad steps since the last read (int64, on the loss's device)
        self._first: Tensor | None = None  # index into _steps of the first of them, -1 when none
        self._last: Tensor | None = None  # the latest step's flag
        self._values: dict[tuple[str, ...], Tensor] = {}  # term values at the first bad step, by term names
        self._steps: list[tuple[int, tuple[str, ...]]] = []  # (global step, term names) of each recorded step
        self._pending: Tensor | None = None  # any bad step since the last optimizer step (gradient accumulation)

    def record(self, step: int, terms: dict[str, Tensor], values: Tensor, total: Tensor) -> None:
        """Record one training step's loss: ``values`` stacks ``terms``' values, ``total`` is their sum.

        A handful of small device operations; nothing is read on the host.
        """
        bad = torch.isfinite(total.detach()).logical_not_()
        if self._count is None:
            self._count = torch.zeros((), dtype=torch.long, device=total.device)
            self._first = torch.full((), -1, dtype=torch.long, device=total.device)
        names = tuple(terms)
        first_now = bad & self._count.eq(0)
        self._first = torch.where(first_now, len(self._steps), self._first)
        previous = self._values.get(names)
        values = values.detach().float()
        self._values[names] = torch.where(first_now, values, values if previous is None else previous)
        self._count = self._count + bad
        self._steps.append((step, names))
        self._last = bad
        self._pending = bad if self._pending is None else self._pending | bad

    def found_inf(self, sticky: bool) -> Tensor | None:
        """The flag for the coming optimizer step (1.0 = skip it), or None when no step was recorded since the
        last one. ``sticky``: skip every update after a non-finite loss until the next read (so that a run
        that stops there stops with the weights of the bad step)."""
        if self._pending is None:
            return None
        flag = self._count.gt(0) if sticky else self._pending
        self._pending = None
        return flag.float()

    def read(self) -> NonFinite | None:
        """What happened since the last read (one host read), or None when every loss was finite; starts a new
        window."""
        if self._count is None or not self._steps:
            return None
        count, first, last = torch.stack([self._count, self._first, self._last.long()]).tolist()
        steps, values = self._steps, self._values
        self._count, self._first = torch.zeros_like(self._count), torch.full_like(self._first, -1)
        self._last, self._values, self._steps = None, {}, []
        if count == 0:
            return None
        step, names = steps[first]
        return NonFinite(step=step, terms=dict(zip(names, values[names].tolist())), count=count, last=bool(last))
