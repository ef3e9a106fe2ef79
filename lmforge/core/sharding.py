"""Sharding the backbone along its own block classes (FSDP and FSDP2).

HF models name the classes that must not be split across devices in ``_no_split_modules``
(``GPT2Block``, ``BertLayer``...). Both FSDP flavours wrap/shard exactly those blocks, so one
overlay works for every architecture without naming its classes.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.strategies import FSDPStrategy
from torch import nn


def block_classes(module: nn.Module) -> set[type[nn.Module]]:
    """The classes of ``module``'s submodules named in any HF ``_no_split_modules`` inside it."""
    names = {name for m in module.modules() for name in (getattr(m, "_no_split_modules", None) or [])}
    return {type(m) for m in module.modules() if type(m).__name__ in names}


def fully_shard_blocks(backbone: nn.Module, extra: list[nn.Module], mesh: Any) -> None:
    """FSDP2: ``fully_shard`` each block, then the backbone root, then each module in ``extra``.

    ``extra`` holds the plugin submodules that own trainable parameters (an adversary head, a
    projection): sharded on their own so their gradients are reduced across ranks like the
    backbone's. A module is only gathered when its ``forward`` is called, so plugins must call
    their parameterised submodules (``self.head(x)``) rather than read their weights directly.
    """
    from torch.distributed.fsdp import fully_shard

    classes = tuple(block_classes(backbone))
    if not classes:
        raise ValueError(
            f"FSDP2: {type(backbone).__name__} names no block classes in _no_split_modules; "
            "use the ddp or fsdp overlay for this backbone."
        )
    for module in backbone.modules():
        if isinstance(module, classes):
            fully_shard(module, mesh=mesh)
    fully_shard(backbone, mesh=mesh)
    for module in extra:
        fully_shard(module, mesh=mesh)


class BlockFSDPStrategy(FSDPStrategy):
    """Lightning's ``FSDPStrategy`` whose auto-wrap (and activation checkpointing) policy is the model's
    own block classes (HF ``_no_split_modules``), found when the model is wrapped.

    Args:
        checkpoint_blocks: Recompute each block's activations in backward (activation checkpointing).
        kwargs: Passed to ``FSDPStrategy`` (``sharding_strategy``, ``state_dict_type``, ``cpu_offload``...).
            An explicit ``auto_wrap_policy`` or ``activation_checkpointing_policy`` wins over the blocks.
    """

    def __init__(self, checkpoint_blocks: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.checkpoint_blocks = checkpoint_blocks

    def _setup_model(self, model: nn.Module) -> nn.Module:
        classes = block_classes(model)
        if classes and "auto_wrap_policy" not in self.kwargs:
            from torch.distributed.fsdp.wrap import ModuleWrapPolicy

            self.kwargs["auto_wrap_policy"] = ModuleWrapPolicy(classes)
        if classes and self.checkpoint_blocks and not self._activation_checkpointing_kwargs:
            from torch.distributed.fsdp.wrap import ModuleWrapPolicy

            self._activation_checkpointing_kwargs = {"auto_wrap_policy": ModuleWrapPolicy(classes)}
        return super()._setup_model(model)
