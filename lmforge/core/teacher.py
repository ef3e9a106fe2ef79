"""A frozen teacher for distillers: the public loader built-in and third-party distillers share.

A distiller names its teacher by a path, an lmforge checkpoint
(``runs/<name>/version_N/checkpoints/last.ckpt``) or a local Hugging Face model
directory, and loads it in ``setup`` (model stage), once the student's backbone
and tokenizer exist::

    from lmforge.core.teacher import FrozenTeacher, TeacherDtype, load_teacher

    def setup(self, model: Host) -> None:
        self._teacher = load_teacher(self.teacher, model, self.teacher_dtype)

    def loss(self, ctx: StepContext) -> Tensor:
        teacher = self._teacher(ctx.objective.model_inputs(ctx.batch), hidden_states=True)
        ...

`load_teacher` builds the model with the run objective's Auto class (a
checkpoint saved with another one is refused), checks that it was trained with
the run's tokenizer, freezes it and puts it in eval mode. The `FrozenTeacher`
it returns is a plain object, not an ``nn.Module``: kept in a plain attribute
of the distiller, it stays out of the student's module tree, so it is not in
the student's state dict or checkpoints, not given to the optimizer, not
wrapped by DDP/FSDP and not put back in training mode by ``model.train()``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor
from transformers import PretrainedConfig, PreTrainedModel
from transformers.activations import GELUTanh, NewGELUActivation

from lmforge.core.checkpoint import check_vocabulary, load_trained

if TYPE_CHECKING:
    from transformers.modeling_outputs import ModelOutput

    from lmforge.core.plugins import Host

#: The recipe key a distiller's teacher is named under; errors about the teacher name it.
TEACHER_KEY = "model.distiller.init_args.teacher"
TEACHER_HINT = ("Train the teacher first (e.g. `lmforge fit --config clm-pretrain`) and set "
                f"{TEACHER_KEY} to its checkpoint (runs/<name>/version_N/checkpoints/last.ckpt) "
                "or to a local HF model directory.")
#: The precisions a teacher can run in (a distiller's ``teacher_dtype`` argument).
TeacherDtype = Literal["float32", "bfloat16", "float16"]
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class FrozenTeacher:
    """A teacher model held outside the student's module tree, frozen and in eval mode.

    Lightning does not move it to the device (it is not a submodule), so each call
    moves it, once, to the device of its inputs.

    Attributes:
        model: The ``transformers`` model.
    """

    def __init__(self, model: PreTrainedModel) -> None:
        _fuse_gelu_tanh(model)
        self.model = model.eval().requires_grad_(False)
        # A teacher scores each batch once: no key/value cache to build (GPT-2 and other decoders make one in eval).
        self._no_cache = {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}

    @property
    def config(self) -> PretrainedConfig:
        """The teacher's HF config (``num_hidden_layers``, ``hidden_size``, ``vocab_size``, ...)."""
        return self.model.config

    def __call__(self, inputs: dict[str, Tensor], hidden_states: bool = False) -> ModelOutput:
        """The teacher's outputs for ``inputs``, without gradients.

        Args:
            inputs: The backbone's keyword arguments (``ctx.objective.model_inputs(ctx.batch)``).
            hidden_states: Also return ``hidden_states`` (the embedding output, then one per block).

        Returns:
            The HF output: ``logits`` and, when asked, ``hidden_states``.
        """
        device = inputs["input_ids"].device
        if self.model.device != device:
            self.model.to(device)
        # no_grad rather than inference_mode: the loss keeps teacher tensors for the student's
        # backward pass, and inference-mode tensors cannot be saved for backward.
        with torch.no_grad():
            return self.model(**inputs, output_hidden_states=hidden_states, **self._no_cache)

    def logits_dtype(self, dtype: torch.dtype | None = None) -> torch.dtype:
        """The precision `logits` runs the teacher in for a student of parameter dtype ``dtype``: a float32
        teacher follows a half-precision student; otherwise the teacher's own."""
        if dtype in (torch.bfloat16, torch.float16) and self.model.dtype == torch.float32:
            return dtype
        return self.model.dtype

    def logits(self, inputs: dict[str, Tensor], dtype: torch.dtype | None = None) -> Tensor:
        """The teacher's logits for ``inputs``, computed in inference mode: the cheapest teacher pass.

        Inference-mode tensors cannot be saved for the student's backward pass, so use the result only
        through operations that copy it or keep nothing of it for backward (``logit_distillation_loss``
        does); ``__call__`` returns tensors that any loss may keep.

        Args:
            inputs: The backbone's keyword arguments (``ctx.objective.model_inputs(ctx.batch)``).
            dtype: The student's parameter dtype: a float32 teacher follows a student trained in half
                precision (``trainer.precision: bf16-true``); None leaves it as it is.
        """
        device = inputs["input_ids"].device
        if self.model.device != device:
            self.model.to(device)
        if self.logits_dtype(dtype) != self.model.dtype:
            self.model.to(dtype)
        with torch.inference_mode():
            return self.model(**inputs, **self._no_cache).logits


def _fuse_gelu_tanh(model: torch.nn.Module) -> None:
    """Swap the written-out tanh GELU (``gelu_new``: GPT-2, GPT-J, ...) for torch's one-kernel version of the same
    formula (``GELUTanh``, HF's ``gelu_pytorch_tanh``): equal up to float rounding (about 1e-7 relative),
    several times faster, and the teacher is never trained, so nothing else depends on which one runs."""
    for module in model.modules():
        for name, child in module.named_children():
            if type(child) is NewGELUActivation:
                setattr(module, name, GELUTanh())


def load_teacher(path: str | Path, model: Host, dtype: TeacherDtype | None = None,
                 key: str = TEACHER_KEY) -> FrozenTeacher:
    """Load, check and freeze the teacher for the student ``model``; call it in a distiller's ``setup``.

    Args:
        path: An lmforge checkpoint (``.ckpt``) or a local HF model directory.
        model: The host view ``setup`` receives (its ``objective``, ``tokenizer``, ``backbone`` and ``device``).
        dtype: Run the teacher in this precision; None keeps the saved one.
        key: The recipe key that named ``path``, for errors.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the model was trained with another kind of objective (its Auto class differs from the
            objective's), with another tokenizer, or scores another vocabulary size.
    """
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"{key.rsplit('.', 1)[0]}.teacher_dtype: must be one of {', '.join(DTYPES)} or null, "
                         f"got {dtype!r}.")
    hint = TEACHER_HINT if key == TEACHER_KEY else ""
    teacher = load_trained(path, model.objective.auto_model, key, DTYPES[dtype] if dtype else None, hint=hint)
    check_vocabulary(path, model.tokenizer, key)
    ours, theirs = model.backbone.config.vocab_size, teacher.config.vocab_size
    if ours != theirs:
        raise ValueError(
            f"{key}: the teacher's vocab_size must equal the student's, got {theirs} (teacher, {path}) vs "
            f"{ours} (student). Set data.init_args.tokenizer.path to the teacher's tokenizer."
        )
    return FrozenTeacher(teacher.to(model.device))
