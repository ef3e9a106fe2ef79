"""The Lightning strategies the sharding overlays name (``overlays/fsdp``, ``overlays/fsdp2``).

Both wrap or shard the backbone along its own block classes (HF ``_no_split_modules``), found with
`lmforge.core.sharding.block_classes`, so one overlay works for every architecture.
"""

from __future__ import annotations

from typing import Any, Literal

from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
from torch import nn
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

from lmforge.core.sharding import block_classes


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
            self.kwargs["auto_wrap_policy"] = ModuleWrapPolicy(classes)
        if classes and self.checkpoint_blocks and not self._activation_checkpointing_kwargs:
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
