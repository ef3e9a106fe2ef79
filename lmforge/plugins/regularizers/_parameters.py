"""Which backbone parameters a weight penalty covers (shared by L1Penalty and L2Penalty).

Biases, normalization weights and embeddings are skipped by default, as in
nanoGPT and the HF Trainer's weight-decay groups: shrinking a norm's gain or a
bias toward zero does not simplify the function the way shrinking a weight
matrix does, and embedding rows of rare tokens would be pulled to zero only
because they are seldom updated. Norms and embeddings are found by module type
(any class whose name ends in ``Norm``, such as ``LlamaRMSNorm``, counts as a
norm), so the defaults work across architectures; name patterns refine them.

Under FSDP2 the parameters are sharded DTensors: `sharded_penalty` computes the penalty of each rank's
shards and all-reduces the value, so every rank's loss holds the penalty of the whole parameters (the number
one process computes) while each shard's gradient stays the plain one (``2 * weight * w`` for L2).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from lmforge.core.plugins import Host, Regularizer, StepContext


def _is_norm(module: nn.Module) -> bool:
    norm_types = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.modules.batchnorm._NormBase)
    return isinstance(module, norm_types) or type(module).__name__.endswith("Norm")


def select_parameters(
    backbone: nn.Module,
    skip_biases: bool = True,
    skip_norms: bool = True,
    skip_embeddings: bool = True,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> list[str]:
    """Names (as in ``backbone.named_parameters()``) of the parameters a penalty covers.

    A parameter is covered when it requires grad, matches an ``include`` pattern
    (if any are given), matches no ``exclude`` pattern (``re.search`` on the
    name) and is not skipped as a bias, norm or embedding. A weight tied to an
    embedding (GPT-2's ``lm_head``) is an embedding.
    """
    kinds: dict[int, set[str]] = {}
    for module in backbone.modules():
        for local_name, param in module.named_parameters(recurse=False):
            found = kinds.setdefault(id(param), set())
            if local_name == "bias":
                found.add("bias")
            if _is_norm(module):
                found.add("norm")
            if isinstance(module, nn.Embedding):
                found.add("embedding")
    skipped = {kind for kind, skip in (("bias", skip_biases), ("norm", skip_norms),
                                       ("embedding", skip_embeddings)) if skip}
    names = []
    for name, param in backbone.named_parameters():
        if not param.requires_grad or kinds.get(id(param), set()) & skipped:
            continue
        if include is not None and not any(re.search(p, name) for p in include):
            continue
        if any(re.search(p, name) for p in exclude):
            continue
        names.append(name)
    return names


def check_patterns(owner: str, key: str, patterns: Sequence[str] | None) -> None:
    """Refuse a pattern that is not a regular expression, naming the recipe key."""
    for pattern in patterns or ():
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{owner}: {key} must hold regular expressions, got {pattern!r} ({exc}).") from None


def lookup(backbone: nn.Module, names: Sequence[str]) -> list[Tensor]:
    """The parameters called ``names``, looked up now (a strategy may have replaced the tensors since setup)."""
    params = dict(backbone.named_parameters())
    return [params[n] for n in names]


def sharded_penalty(penalty: Callable[[Sequence[Tensor]], Tensor], params: Sequence[Tensor]) -> Tensor:
    """``penalty(params)`` for a penalty that is a sum over elements, when some ``params`` are DTensors.

    Each rank sums its local shards and the sums are all-reduced over the mesh dimensions the parameters are
    sharded on. Only the value is all-reduced: the gradient flows through this rank's own shards alone, which
    is each shard's exact gradient, and FSDP2 adds it to the sharded gradient it reduces for the data loss.
    (A differentiable all-reduce would also sum the other ranks' gradients into each shard: world-size times
    too large.)
    """
    from torch.distributed.tensor import DTensor, Shard

    sharded = [p for p in params if isinstance(p, DTensor)]
    whole = [p for p in params if not isinstance(p, DTensor)]
    total = penalty(whole) if whole else None
    if sharded:
        import torch.distributed as dist

        mesh, placements = sharded[0].device_mesh, sharded[0].placements
        if any(p.device_mesh != mesh or p.placements != placements for p in sharded):
            raise ValueError("WeightPenalty: the penalized parameters must share one device mesh and placement; "
                             "they are sharded differently.")
        local = penalty([p.to_local() for p in sharded])
        reduced = local.detach().clone()
        for dim, placement in enumerate(placements):
            if isinstance(placement, Shard):  # summed over the shards; replicas already hold the same values
                dist.all_reduce(reduced, group=mesh.get_group(dim))
        local = reduced + (local - local.detach())  # exactly the value of `reduced`, the gradient of `local`
        total = local if total is None else total + local
    return total if total is not None else torch.zeros(())


class WeightPenalty(Regularizer):
    """Base of `L1Penalty` and `L2Penalty`: ``weight * penalty(selected parameters)``."""

    def __init__(self, weight: float, skip_biases: bool, skip_norms: bool, skip_embeddings: bool,
                 include: list[str] | None, exclude: list[str] | None) -> None:
        super().__init__()
        name = type(self).__name__
        if not weight >= 0.0:
            raise ValueError(f"{name}: weight must be >= 0, got {weight}. Use a small value such as 1e-5.")
        check_patterns(name, "include", include)
        check_patterns(name, "exclude", exclude)
        self.weight = weight
        self.skip_biases = skip_biases
        self.skip_norms = skip_norms
        self.skip_embeddings = skip_embeddings
        self.include = list(include) if include is not None else None
        self.exclude = list(exclude or [])
        #: Names of the covered parameters, found in `setup`.
        self.parameter_names: list[str] = []

    @staticmethod
    def penalty(params: Sequence[Tensor]) -> Tensor:
        raise NotImplementedError

    def setup(self, model: Host) -> None:
        self.parameter_names = select_parameters(model.backbone, self.skip_biases, self.skip_norms,
                                                 self.skip_embeddings, self.include, self.exclude)
        if not self.parameter_names:
            raise ValueError(
                f"{type(self).__name__}: no backbone parameter is selected (include={self.include}, "
                f"exclude={self.exclude}, skip_biases={self.skip_biases}, skip_norms={self.skip_norms}, "
                f"skip_embeddings={self.skip_embeddings}). Loosen the patterns."
            )

    def loss(self, ctx: StepContext) -> Tensor:
        return self.weight * sharded_penalty(self.penalty, lookup(ctx.backbone, self.parameter_names))
