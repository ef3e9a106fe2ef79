"""Sharding the backbone along its own block classes (FSDP and FSDP2).

HF models name the classes that must not be split across devices in ``_no_split_modules``
(``GPT2Block``, ``BertLayer``...). Both FSDP flavours wrap/shard exactly those blocks, so one
overlay works for every architecture without naming its classes.
"""

from __future__ import annotations

from typing import Any, Literal

from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
from torch import nn


def block_classes(module: nn.Module) -> set[type[nn.Module]]:
    """The classes of ``module``'s submodules named in any HF ``_no_split_modules`` inside it."""
    names = {name for m in module.modules() for name in (getattr(m, "_no_split_modules", None) or [])}
    return {type(m) for m in module.modules() if type(m).__name__ in names}


def fully_shard_blocks(backbone: nn.Module, mesh: Any) -> None:
    """FSDP2: ``fully_shard`` each of the backbone's blocks, then the backbone root."""
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


class FSDP2Strategy(ModelParallelStrategy):
    """Lightning's ``ModelParallelStrategy`` for pure data parallelism with FSDP2: by default every process
    is a data-parallel rank (Lightning's ``auto`` would make the processes of a node tensor-parallel ranks,
    which lmforge does not use). ``LanguageModel.configure_model`` shards the blocks.

    Args:
        data_parallel_size: Ranks that shard the model; ``auto``: world size / ``tensor_parallel_size``.
        tensor_parallel_size: Must stay 1 until lmforge applies tensor parallelism.
        save_distributed_checkpoint: Save one shard per rank (a directory) rather than one full file.
        kwargs: Passed to ``ModelParallelStrategy`` (``process_group_backend``, ``timeout``).
    """

    def __init__(self, data_parallel_size: Literal["auto"] | int = "auto", tensor_parallel_size: int = 1,
                 save_distributed_checkpoint: bool = True, **kwargs: Any) -> None:
        if tensor_parallel_size != 1:
            raise ValueError(
                f"FSDP2Strategy: tensor_parallel_size must be 1 (lmforge applies no tensor parallelism), got "
                f"{tensor_parallel_size}. Remove trainer.strategy.init_args.tensor_parallel_size."
            )
        super().__init__(data_parallel_size, tensor_parallel_size, save_distributed_checkpoint, **kwargs)

    def setup_environment(self) -> None:
        if self._data_parallel_size == "auto":
            self._data_parallel_size = self.num_processes * self.num_nodes
        super().setup_environment()
