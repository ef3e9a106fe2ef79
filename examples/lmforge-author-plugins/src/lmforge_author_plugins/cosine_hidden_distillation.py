"""CosineHiddenDistillation: the cosine embedding loss of DistilBERT (Sanh et al. 2019, "DistilBERT, a
distilled version of BERT: smaller, faster, cheaper and lighter"), on one chosen layer.

The student's hidden state at a position is pulled toward the teacher's at the
same position: ``alpha * mean(1 - cos(W h_student, h_teacher))``, averaged over
the positions the objective scores (``ctx.scored_mask``), so padding and the
positions a causal LM does not predict from never count. ``W`` is a learned
linear map from the student's width to the teacher's (as in TinyBERT, Jiao et
al. 2020) when the widths differ, and the identity otherwise.

The teacher is an lmforge checkpoint (what ``lmforge fit`` leaves in
``runs/<name>/version_N/checkpoints/``) or a local Hugging Face directory,
loaded with lmforge's public loader (`lmforge.core.teacher.load_teacher`),
which checks it against the run's objective and tokenizer and keeps it frozen
and out of the student's checkpoints.
"""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from lmforge.core.plugins import Distiller, Host, StepContext
from lmforge.core.teacher import FrozenTeacher, TeacherDtype, load_teacher


def cosine_distance(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean over rows of ``1 - cos(student_row, teacher_row)``; both (N, D). 0 for no rows."""
    if student.shape[0] == 0:
        return student.sum() * 0.0
    return (1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=-1)).mean()


class CosineHiddenDistillation(Distiller):
    """Pulls one layer's hidden states toward a frozen teacher's, by cosine distance at the scored positions
    (DistilBERT, Sanh et al. 2019).

    Args:
        teacher: The teacher: an lmforge checkpoint (``runs/<name>/version_N/checkpoints/last.ckpt``) or a local
            Hugging Face model directory, trained with the same kind of objective and the student's tokenizer.
        student_layer: The student's hidden state to distil, as an index of the HF ``hidden_states`` (0: the
            embeddings, -1: the last block's output).
        teacher_layer: The teacher's hidden state it imitates, indexed the same way.
        alpha: Weight of the distillation term.
        hard_loss_weight: Weight of the objective's own loss.
        teacher_dtype: Run the teacher in this precision (None keeps its saved one).
    """

    requires: ClassVar[frozenset[str]] = frozenset({"hidden_states"})

    def __init__(self, teacher: str, student_layer: int = -1, teacher_layer: int = -1, alpha: float = 1.0,
                 hard_loss_weight: float = 1.0, teacher_dtype: TeacherDtype | None = None) -> None:
        super().__init__()
        if alpha < 0 or hard_loss_weight < 0:
            raise ValueError(f"CosineHiddenDistillation: alpha and hard_loss_weight must be >= 0, got {alpha} and "
                             f"{hard_loss_weight}.")
        self.teacher = teacher
        self.student_layer = student_layer
        self.teacher_layer = teacher_layer
        self.alpha = alpha
        self.objective_weight = hard_loss_weight
        self.teacher_dtype = teacher_dtype
        self._teacher: FrozenTeacher | None = None  # a plain attribute: not trained, not checkpointed

    def setup(self, model: Host) -> None:
        """Model stage: load the teacher; create the projection when the widths differ."""
        self._teacher = load_teacher(self.teacher, model, self.teacher_dtype)
        for side, layer, config in (("student", self.student_layer, model.backbone.config),
                                    ("teacher", self.teacher_layer, self._teacher.config)):
            states = config.num_hidden_layers + 1
            if not -states <= layer < states:
                raise ValueError(f"CosineHiddenDistillation: {side}_layer must index the {side}'s {states} hidden "
                                 f"states (-{states} to {states - 1}), got {layer}.")
        ours, theirs = model.backbone.config.hidden_size, self._teacher.config.hidden_size
        # Created here, once both widths are known: the optimizer trains it and checkpoints keep it.
        self.projection = (nn.Linear(ours, theirs, bias=False, device=model.device) if ours != theirs
                           else nn.Identity())

    def loss(self, ctx: StepContext) -> Tensor:
        """Loss stage: ``loss/cosine_hidden_distillation``."""
        teacher = self._teacher(ctx.objective.model_inputs(ctx.batch), hidden_states=True)
        mask = ctx.scored_mask  # (B, T)
        student = self.projection(ctx.outputs.hidden_states[self.student_layer][mask])  # (N, D_teacher)
        target = teacher.hidden_states[self.teacher_layer][mask].to(student.dtype)  # (N, D_teacher)
        return self.alpha * cosine_distance(student, target)
