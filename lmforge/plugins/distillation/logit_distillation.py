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
from torch import Tensor

from lmforge.core.plugins import Batch, Distiller, Host, StepContext, objective_task
from lmforge.core.teacher import FrozenTeacher, TeacherDtype, load_teacher

IGNORE_INDEX = -100
#: Values per chunk of rows in the KL's passes on a CPU (see _SoftenedKL.forward).
CHUNK_VALUES = 1 << 18


class _SoftenedKL(torch.autograd.Function):
    """Per-row KL(softmax(t / T) || softmax(s / T)) (or the reverse) and its gradient, written for few passes.

    Autograd through log_softmax, exp and a soft-target cross-entropy walks the (N, V) logits about a dozen
    times and keeps several (N, V) tensors for backward. Here the forward pass takes both softmaxes (the
    fused kernel, faster than ``exp``), the log-normalisers from the row maxima (log Z = max - log max p,
    exact and stable because max p >= 1/V) and the cross term with one in-place product, and keeps a single
    (N, V) tensor for backward: the gradient of the row's KL with respect to the softened student logits
    (p_s - p_t forward; p_s * (log p_s - log p_t - KL) reverse). Backward scales it by the incoming row
    gradient over T. The teacher gets no gradient.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, student: Tensor, teacher: Tensor, temperature: float,
                reverse: bool) -> Tensor:
        N, V = student.shape
        kl = torch.empty(N, dtype=torch.float32, device=student.device)
        grad = torch.empty(N, V, dtype=torch.float32, device=student.device)
        # Rows in chunks of about 2^18 values (1 MB of float32 per temporary): the ten-odd passes over a chunk
        # then run in cache, about 20 % faster over the whole than over (N, V) at once on a CPU.
        rows = max(1, CHUNK_VALUES // V) if student.device.type == "cpu" else N
        with torch.autocast(student.device.type, enabled=False):  # float32 throughout, as the reference
            for i in range(0, N, rows):
                _softened_kl_rows(student[i:i + rows], teacher[i:i + rows], temperature, reverse,
                                  kl[i:i + rows], grad[i:i + rows])
        ctx.save_for_backward(grad)
        ctx.temperature, ctx.dtype, ctx.spent = temperature, student.dtype, False
        return kl

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_kl: Tensor) -> tuple[Tensor | None, ...]:
        if ctx.spent:
            raise RuntimeError("logit_distillation_loss: backward runs once per forward (its gradient is scaled in "
                               "place); compute the loss again instead of backward(retain_graph=True) twice.")
        ctx.spent = True
        (grad,) = ctx.saved_tensors
        return grad.mul_((grad_kl / ctx.temperature).unsqueeze(-1)).to(ctx.dtype), None, None, None


def _softened_kl_rows(student: Tensor, teacher: Tensor, temperature: float, reverse: bool, kl: Tensor,
                      grad: Tensor) -> None:
    """Write the rows' KL into ``kl`` (n,) and its gradient with respect to the softened student logits into
    ``grad`` (n, V)."""
    s = torch.div(student.float(), temperature)  # (n, V), a fresh tensor even at T = 1
    t = torch.div(teacher.float(), temperature)
    p_s, p_t = torch.softmax(s, dim=-1), torch.softmax(t, dim=-1)
    log_z_s, log_z_t = _log_normaliser(s, p_s), _log_normaliser(t, p_t)  # (n,)
    if reverse:  # KL(p_s || p_t) = sum p_s (s - t) - log Z_s + log Z_t
        diff = s.sub_(t)  # s - t
        torch.sub(torch.linalg.vecdot(diff, p_s), log_z_s - log_z_t, out=kl)
        # d KL / d s = p_s * (log p_s - log p_t - KL) = p_s * (s - t - (log Z_s - log Z_t) - KL)
        torch.mul(diff.sub_((log_z_s - log_z_t + kl).unsqueeze(-1)), p_s, out=grad)
    else:  # KL(p_t || p_s) = sum p_t (t - s) - log Z_t + log Z_s
        torch.add(t.sub_(s).mul_(p_t).sum(-1), log_z_s - log_z_t, out=kl)
        torch.sub(p_s, p_t, out=grad)  # d KL / d s = p_s - p_t


def _log_normaliser(logits: Tensor, probs: Tensor) -> Tensor:
    """(N,) log sum exp over the last dim, from the softmax already taken: log Z = max x - log max p.

    Exact up to rounding and stable (max p >= 1/V); two reductions instead of logsumexp's passes and
    temporaries (``max(dim)`` with its indices is slower than two ``amax``).
    """
    return logits.amax(-1) - probs.amax(-1).log()


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
    kl = _SoftenedKL.apply(student_logits.reshape(-1, V), teacher_logits.detach().reshape(-1, V), temperature,
                           reverse)  # (N,)
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
        teacher_dtype: Run the teacher in this precision (None: its saved one, or the student's
            parameter dtype when that is bfloat16 or float16).
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
        student_logits = ctx.outputs.logits
        # In the student's precision unless teacher_dtype says otherwise; inference mode, as the KL keeps
        # nothing of the teacher's logits for backward.
        dtype = next(ctx.backbone.parameters()).dtype if self.teacher_dtype is None and ctx.backbone is not None else None
        teacher_logits = self._teacher.logits(ctx.objective.model_inputs(ctx.batch), dtype)
        mask = distillation_positions(ctx.batch, self._causal, self.masked_only) if student_logits.ndim == 3 else None
        return self.alpha * logit_distillation_loss(student_logits, teacher_logits, self.temperature, mask,
                                                    self.reverse)
