"""Hidden-state distillation: the student's intermediate representations
imitate the teacher's.

Cosine distance as in DistilBERT (Sanh et al. 2019, L_cos) or mean squared
error as in TinyBERT (Jiao et al. 2020, L_hidn = MSE(H^S W_h, H^T)), between
student block i and teacher block ``layer_map[i]``, through a learned linear
projection W_h (student width -> teacher width, no bias, shared by all pairs,
as TinyBERT's) when the widths differ.

Block indices count from 0 and the embedding output is not a block: block i's
output is ``hidden_states[i + 1]`` of an HF model. The default map is uniform,
i -> i*k + k - 1 with k = teacher_blocks // student_blocks (TinyBERT's
g(m) = m*k counted from 1), so the last student block meets the teacher's last
block when the depths divide. HF applies the final norm (GPT-2's ``ln_f``,
Llama's ``norm``) to the last hidden state, on both sides alike.

The term is the mean over the mapped pairs, each averaged over the
non-padding positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmforge.core.plugins import Distiller, Host, StepContext
from lmforge.core.teacher import FrozenTeacher, TeacherDtype, load_teacher

Metric = Literal["cosine", "mse"]


def uniform_layer_map(student_blocks: int, teacher_blocks: int) -> dict[int, int]:
    """Student block i -> teacher block i*k + k - 1, k = teacher_blocks // student_blocks."""
    k = teacher_blocks // student_blocks
    return {i: i * k + k - 1 for i in range(student_blocks)}


def hidden_state_distillation_loss(student_states: Sequence[Tensor], teacher_states: Sequence[Tensor],
                                   metric: Metric = "cosine", mask: Tensor | None = None) -> Tensor:
    """Mean over pairs of the distance between student and teacher states.

    Args:
        student_states: (B, T, D) states, already projected to the teacher's width.
        teacher_states: (B, T, D) states, one per student state.
        metric: ``cosine`` (1 - cosine similarity per position) or ``mse``
            (mean squared difference over features, per position).
        mask: (B, T) True at the positions that count; None counts all.
    """
    distances = []
    for student, teacher in zip(student_states, teacher_states, strict=True):
        if mask is not None:
            student, teacher = student[mask], teacher[mask]  # (N, D)
        if student.numel() == 0:
            distances.append(student.sum() * 0.0)
            continue
        student, teacher = student.float(), teacher.float()
        if metric == "cosine":
            per_position = 1.0 - F.cosine_similarity(student, teacher, dim=-1)
        else:
            per_position = (student - teacher).pow(2).mean(-1)
        distances.append(per_position.mean())
    return torch.stack(distances).mean()


class HiddenStateDistillation(Distiller):
    """Match chosen student blocks' hidden states to a frozen teacher's (DistilBERT's cosine, TinyBERT's MSE).

    Args:
        teacher: The teacher: an lmforge checkpoint
            (``runs/<name>/version_N/checkpoints/last.ckpt``) or a local HF model
            directory, trained with the same kind of objective and the same
            tokenizer as the student. Loaded when the model is built.
        layer_map: Student block -> teacher block, both counted from 0 (the
            embedding output is not a block). Default uniform: i -> i*k + k - 1,
            k = teacher blocks // student blocks.
        metric: ``cosine`` (DistilBERT) or ``mse`` (TinyBERT).
        alpha: Weight of the hidden-state term.
        hard_loss_weight: Weight of the objective's own (hard-label) loss.
        teacher_dtype: Run the teacher in this precision (None keeps its saved one).
    """

    needs_hidden_states = True

    def __init__(
        self,
        teacher: str,
        layer_map: dict[int, int] | None = None,
        metric: Metric = "cosine",
        alpha: float = 1.0,
        hard_loss_weight: float = 1.0,
        teacher_dtype: TeacherDtype | None = None,
    ) -> None:
        super().__init__()
        if layer_map is not None and not layer_map:
            raise ValueError("HiddenStateDistillation: layer_map must map at least one student block, got {}. "
                             "Leave it unset for the uniform map.")
        if alpha < 0 or hard_loss_weight < 0:
            raise ValueError(f"HiddenStateDistillation: alpha and hard_loss_weight must be non-negative, got "
                             f"{alpha} and {hard_loss_weight}.")
        self.teacher = teacher
        self.layer_map = dict(layer_map) if layer_map is not None else None
        self.metric = metric
        self.alpha = alpha
        self.objective_weight = hard_loss_weight
        self.teacher_dtype = teacher_dtype
        self._teacher: FrozenTeacher | None = None
        self.pairs: list[tuple[int, int]] = []

    def setup(self, model: Host) -> None:
        self._teacher = load_teacher(self.teacher, model, self.teacher_dtype)
        student, teacher = model.backbone.config, self._teacher.config
        self.pairs = self.resolve_layer_map(student.num_hidden_layers, teacher.num_hidden_layers)
        # Created here, after the backbone exists, so the optimizer trains it and checkpoints keep it.
        if student.hidden_size != teacher.hidden_size:
            device = next(model.backbone.parameters()).device
            self.projection = nn.Linear(student.hidden_size, teacher.hidden_size, bias=False, device=device)
        else:
            self.projection = nn.Identity()

    def resolve_layer_map(self, student_blocks: int, teacher_blocks: int) -> list[tuple[int, int]]:
        """The (student block, teacher block) pairs, checked against both depths."""
        if self.layer_map is None:
            if teacher_blocks < student_blocks:
                raise ValueError(
                    f"HiddenStateDistillation: the uniform layer map needs a teacher at least as deep as the student, "
                    f"got {teacher_blocks} teacher and {student_blocks} student blocks. Set layer_map explicitly."
                )
            return sorted(uniform_layer_map(student_blocks, teacher_blocks).items())
        for student_block, teacher_block in self.layer_map.items():
            for side, index, blocks in (("student", student_block, student_blocks),
                                        ("teacher", teacher_block, teacher_blocks)):
                if not 0 <= index < blocks:
                    raise ValueError(
                        f"HiddenStateDistillation: layer_map must name existing blocks, got {side} block {index} but "
                        f"the {side} has {blocks} (0 to {blocks - 1}). Blocks count from 0; the embedding output is "
                        f"not one. layer_map: {self.layer_map}."
                    )
        return sorted(self.layer_map.items())

    def loss(self, ctx: StepContext) -> Tensor:
        teacher = self._teacher(ctx.objective.model_inputs(ctx.batch), hidden_states=True)
        student_states = [self.projection(ctx.outputs.hidden_states[s + 1]) for s, _ in self.pairs]
        teacher_states = [teacher.hidden_states[t + 1] for _, t in self.pairs]
        attention = ctx.batch.get("attention_mask")
        mask = attention.bool() if attention is not None else None
        return self.alpha * hidden_state_distillation_loss(student_states, teacher_states, self.metric, mask)
