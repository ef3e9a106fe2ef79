"""The frozen teacher the distillers share: loaded once in ``setup``, in eval
mode, without gradients, on the student's device, optionally in lower precision.

Not a plugin: a helper for ``LogitDistillation`` and ``HiddenStateDistillation``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor
from transformers import PretrainedConfig, PreTrainedModel

from lmforge.core.checkpoint import check_vocabulary, load_trained

if TYPE_CHECKING:
    from transformers.modeling_outputs import ModelOutput

    from lmforge.core.plugins import Host


TEACHER_KEY = "model.distiller.init_args.teacher"
TEACHER_HINT = ("Train the teacher first (e.g. `lmforge fit --config clm-pretrain`) and set "
                f"{TEACHER_KEY} to its checkpoint (runs/<name>/version_N/checkpoints/last.ckpt) "
                "or to a local HF model directory.")
TeacherDtype = Literal["float32", "bfloat16", "float16"]
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class FrozenTeacher:
    """A teacher model held outside the student's module tree.

    A plain object, not an ``nn.Module`` attribute of the distiller, on purpose:
    a registered submodule would be saved in the student's checkpoint, handed to
    the optimizer, wrapped by DDP/FSDP and switched back to training mode
    (dropout on) by ``model.train()``. The price is that Lightning does not move
    it to the device, so each call follows the device of its inputs.
    """

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model.eval().requires_grad_(False)

    @property
    def config(self) -> PretrainedConfig:
        return self.model.config

    def __call__(self, inputs: dict[str, Tensor], hidden_states: bool = False) -> ModelOutput:
        device = inputs["input_ids"].device
        if self.model.device != device:
            self.model.to(device)
        # no_grad rather than inference_mode: the loss keeps teacher tensors for the student's
        # backward pass, and inference-mode tensors cannot be saved for backward.
        with torch.no_grad():
            return self.model(**inputs, output_hidden_states=hidden_states)


def load_teacher(path: str, model: Host, dtype: TeacherDtype | None = None) -> FrozenTeacher:
    """Load, check and freeze the teacher for ``model`` (whose backbone and tokenizer exist).

    The teacher is built with the student objective's Auto class, must have been
    trained with the student's tokenizer, and must score the same vocabulary.
    """
    teacher = load_trained(path, model.objective.auto_model, TEACHER_KEY, DTYPES[dtype] if dtype else None,
                           hint=TEACHER_HINT)
    check_vocabulary(path, model.tokenizer, TEACHER_KEY)
    ours, theirs = model.backbone.config.vocab_size, teacher.config.vocab_size
    if ours != theirs:
        raise ValueError(
            f"{TEACHER_KEY}: the teacher's vocab_size must equal the student's, got {theirs} (teacher, {path}) vs "
            f"{ours} (student). Set data.init_args.tokenizer.path to the teacher's tokenizer."
        )
    return FrozenTeacher(teacher.to(model.device))
