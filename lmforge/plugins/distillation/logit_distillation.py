"""Logit distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge
in a Neural Network"; DistilBERT, Sanh et al. 2019).

The student matches the teacher's temperature-softened distribution at every
position that counts::

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))

averaged over positions. T^2 keeps the gradient's scale independent of T
(Hinton 2015, section 2). The objective's hard-label loss is added with its own
weight, ``hard_loss_weight``. ``reverse`` uses KL(student || teacher), the
mode-seeking direction (MiniLLM, Gu et al. 2024).

Positions that count: non-padding tokens (``attention_mask`` 1); for a causal
LM only positions that predict a next token with a label (the last position
predicts nothing); for a masked LM optionally only the masked positions
(``masked_only``; DistilBERT distils every token). Sequence-level logits (B, V)
count every example.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lmforge.core.plugins import Batch, Distiller, Host, StepContext, objective_task
from lmforge.core.teacher import FrozenTeacher, TeacherDtype, load_teacher

IGNORE_INDEX = -100


def logit_distillation_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0,
                            mask: Tensor | None = None, reverse: bool = False) -> Tensor:
    """T^2 times the mean KL divergence between softened teacher and student distributions.

    Args:
        student_logits: (..., V) scores, e.g. (B, T, V) per token or (B, V) per example.
        teacher_logits: The teacher's scores, same shape; no gradient flows into them.
        temperature: T, dividing both sides' logits.
        mask: ``student_logits.shape[:-1]``, True where a position counts; None counts all.
        reverse: KL(student || teacher) instead of KL(teacher || student).

    Returns:
        A scalar; 0 (attached to the graph) when no position counts.
    """
    V = student_logits.shape[-1]
    student = student_logits.reshape(-1, V).float() / temperature  # (N, V)
    with torch.no_grad():
        log_p_teacher = F.log_softmax(teacher_logits.reshape(-1, V).float() / temperature, dim=-1)  # (N, V)
        p_teacher = log_p_teacher.exp()
    if reverse:
        log_p_student = F.log_softmax(student, dim=-1)
        kl = (log_p_student.exp() * (log_p_student - log_p_teacher)).sum(-1)  # (N,)
    else:
        # KL(p_t || p_s) = H(p_t, p_s) - H(p_t): a soft-target cross-entropy (one fused kernel, about
        # half the time of the written-out sum) minus the teacher's entropy, which has no gradient.
        kl = F.cross_entropy(student, p_teacher, reduction="none") + (p_teacher * log_p_teacher).sum(-1)  # (N,)
    if mask is None:
        return temperature**2 * kl.mean()
    # Weighting instead of boolean indexing: a gather and its scatter-backward over (N, V) cost as much as the KL.
    weights = mask.reshape(-1).to(kl.dtype)
    return temperature**2 * (kl * weights).sum() / weights.sum().clamp(min=1.0)


def distillation_positions(batch: Batch, causal: bool, masked_only: bool = False) -> Tensor:
    """(B, T) True at the positions whose distributions are distilled (see the module docstring)."""
    ids = batch["input_ids"]
    attention = batch.get("attention_mask")
    mask = attention.bool() if attention is not None else torch.ones_like(ids, dtype=torch.bool)
    if causal:
        has_next = batch["labels"][:, 1:] != IGNORE_INDEX if "labels" in batch else mask[:, 1:]
        return torch.cat([mask[:, :-1] & has_next, torch.zeros_like(mask[:, :1])], dim=1)
    if masked_only:
        return mask & (batch["labels"] != IGNORE_INDEX)
    return mask


class LogitDistillation(Distiller):
    """Pull the student's output distributions toward a frozen teacher's (Hinton 2015; DistilBERT).

    Args:
        teacher: The teacher: an lmforge checkpoint
            (``runs/<name>/version_N/checkpoints/last.ckpt``) or a local HF model
            directory, trained with the same kind of objective and the same
            tokenizer as the student. Loaded when the model is built, so a
            recipe naming a teacher that does not exist yet still parses.
        temperature: Softmax temperature T of both sides; the KL is scaled by T^2.
        alpha: Weight of the distillation term.
        hard_loss_weight: Weight of the objective's own (hard-label) loss;
            0 trains on the teacher's distributions alone.
        reverse: Use KL(student || teacher) instead of KL(teacher || student).
        masked_only: With a masked-LM objective, distil only the masked
            positions (labels != -100) instead of every non-padding token.
        teacher_dtype: Run the teacher in this precision (None keeps its saved one).
    """

    def __init__(
        self,
        teacher: str,
        temperature: float = 2.0,
        alpha: float = 1.0,
        hard_loss_weight: float = 1.0,
        reverse: bool = False,
        masked_only: bool = False,
        teacher_dtype: TeacherDtype | None = None,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"LogitDistillation: temperature must be positive, got {temperature}.")
        if alpha < 0 or hard_loss_weight < 0:
            raise ValueError(f"LogitDistillation: alpha and hard_loss_weight must be non-negative, got "
                             f"{alpha} and {hard_loss_weight}.")
        self.teacher = teacher
        self.temperature = temperature
        self.alpha = alpha
        self.objective_weight = hard_loss_weight
        self.reverse = reverse
        self.masked_only = masked_only
        self.teacher_dtype = teacher_dtype
        self._teacher: FrozenTeacher | None = None
        self._causal = False

    def setup(self, model: Host) -> None:
        self._causal = objective_task(model.objective) == "causal_lm"
        if self.masked_only and self._causal:
            raise ValueError(
                f"LogitDistillation: masked_only must be false with the causal objective {type(model.objective).__name__} "
                "(every position predicts a token); it selects the masked positions of a masked-LM objective."
            )
        self._teacher = load_teacher(self.teacher, model, self.teacher_dtype)

    def loss(self, ctx: StepContext) -> Tensor:
        teacher_logits = self._teacher(ctx.objective.model_inputs(ctx.batch)).logits
        student_logits = ctx.outputs.logits
        mask = distillation_positions(ctx.batch, self._causal, self.masked_only) if student_logits.ndim == 3 else None
        return self.alpha * logit_distillation_loss(student_logits, teacher_logits, self.temperature, mask,
                                                    self.reverse)
