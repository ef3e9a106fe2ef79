"""Sharding the backbone along its own block classes (FSDP2), called by ``LanguageModel.configure_model``.

HF models name the classes that must not be split across devices in ``_no_split_modules``
(``GPT2Block``, ``BertLayer``...). FSDP2 shards exactly those blocks, so one overlay works for every
architecture without naming its classes. The strategies that select it live in `lmforge.runtime.strategies`.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def block_classes(module: nn.Module) -> set[type[nn.Module]]:
    """The classes of ``module``'s submodules named in any HF ``_no_split_modules`` inside it."""
    names = {name for m in module.modules() for name in (getattr(m, "_no_split_modules", None) or [])}
    return {type(m) for m in module.modules() if type(m).__name__ in names}


def fully_shard_blocks(backbone: nn.Module, mesh: Any) -> None:
    """FSDP2: ``fully_shard`` each of the backbone's blocks, then the backbone root.

    A block that shares a parameter with a module outside it (BERT's embeddings, whose word embeddings the
    masked-LM decoder reuses) is left to the root group, so that each tied pair lies in one FSDP group.
    """
    from torch.distributed.fsdp import fully_shard

    classes = tuple(block_classes(backbone))
    if not classes:
        raise ValueError(
            f"FSDP2: {type(backbone).__name__} names no block classes in _no_split_modules; "
            "use the ddp or fsdp overlay for this backbone."
        )
    for name, module in backbone.named_modules():
        if isinstance(module, classes) and not shares_parameters(backbone, name, module):
            fully_shard(module, mesh=mesh)
    fully_shard(backbone, mesh=mesh)


def shares_parameters(root: nn.Module, name: str, module: nn.Module) -> bool:
    """Whether a parameter of ``module`` (``root``'s submodule ``name``) is also a parameter of a module of
    ``root`` outside it (tied weights)."""
    own = {id(p) for p in module.parameters()}
    prefix = f"{name}." if name else ""
    return any(id(p) in own and not key.startswith(prefix)
               for key, p in root.named_parameters(remove_duplicate=False))


def replicated_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Trainable parameters that FSDP2 did not shard (plain tensors, not DTensors): the plugins' own."""
    from torch.distributed.tensor import DTensor

    return [p for p in module.parameters() if p.requires_grad and not isinstance(p, DTensor)]


def broadcast_parameters(params: list[nn.Parameter], mesh: Any) -> None:
    """Start every rank from rank 0's values of ``params``."""
    import torch.distributed as dist

    group = mesh.get_group()
    for param in params:
        dist.broadcast(param.data, src=dist.get_global_rank(group, 0), group=group)


def average_gradients(params: list[nn.Parameter], mesh: Any) -> None:
    """Average the gradients of replicated ``params`` over the data-parallel ranks (what DDP would do).

    Plugin parameters (an adversary head, a projection) are small and are read by plugin code outside any
    ``forward``, where FSDP2 would not gather them; they are kept whole on every rank instead.
    """
    import torch.distributed as dist

    group = mesh.get_group()
    for param in params:
        if param.grad is not None:
            dist.all_reduce(param.grad, op=dist.ReduceOp.AVG, group=group)


def __getattr__(name: str) -> object:
    # lmforge 0.1 defined the strategies here; overlays and saved configs still name this path.
    from lmforge._compat import moved_attribute  # the compat table; imports nothing until asked

    return moved_attribute(__name__, name)
