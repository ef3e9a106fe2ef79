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

Sparse distillation from cached top-k logits (``teacher_top_k``): per position the teacher keeps its k largest
logits z_k (ids K) and r, its probability off them at T. The teacher's distribution is then known exactly on
K, p_t,k = softmax(z / T)_k, and the rest is one outcome "any other id" of probability r; the loss is the KL
over those k + 1 outcomes::

    T^2 * [ sum_k p_t,k (log p_t,k - log q_k) + r (log r - log q_rest) ],   q = softmax(s / T),

q_rest the student's mass off K. With k = V (r = 0) it is the dense loss. It is an approximation: how the
student spreads q_rest over the other ids is left free. The plainer form, the top k renormalised
(p_t = softmax(z_k / T), no rest; ``sparse_distillation_loss`` without ``teacher_rest``), is the cached top-k
distillation whose bias Anshumann et al. 2025 ("Sparse Logit Sampling: Accelerating Knowledge Distillation in
LLMs") analyse: its gradient pulls the student toward zero probability on every id off K. At tiny scale it
did worse than keeping r (docs/distillation.md, with the figures), so the distiller keeps r. The top k are
stored once per row (`lmforge.core.teacher_cache`), so over a fixed dataset the teacher runs in the first
epoch only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from lmforge.core.data.files import default_cache_dir
from lmforge.core.plugins import Batch, Distiller, Host, LossOutput, StepContext, objective_task
from lmforge.core.teacher import FrozenTeacher, TeacherDtype, load_teacher
from lmforge.core.teacher_cache import TopKCache, row_keys

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
        return _chunked_kl(ctx, student, temperature, lambda part, kl, grad: _softened_kl_rows(
            student[part], teacher[part], temperature, reverse, kl, grad))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_kl: Tensor) -> tuple[Tensor | None, ...]:
        if ctx.spent:
            raise RuntimeError("logit_distillation_loss: backward runs once per forward (its gradient is scaled in "
                               "place); compute the loss again instead of backward(retain_graph=True) twice.")
        ctx.spent = True
        (grad,) = ctx.saved_tensors
        return grad.mul_((grad_kl / ctx.temperature).unsqueeze(-1)).to(ctx.dtype), None, None, None


def _chunked_kl(ctx: torch.autograd.function.FunctionCtx, student: Tensor, temperature: float,
                rows_kl: Callable[[slice, Tensor, Tensor], None]) -> Tensor:
    """The (N,) KL of the (N, V) ``student`` rows, ``rows_kl(part, kl, grad)`` writing each chunk's KL and gradient;
    the gradient is kept on ``ctx`` for the shared backward."""
    N, V = student.shape
    kl = torch.empty(N, dtype=torch.float32, device=student.device)
    grad = torch.empty(N, V, dtype=torch.float32, device=student.device)
    # Rows in chunks of about 2^18 values (1 MB of float32 per temporary): the ten-odd passes over a chunk
    # then run in cache, about 20 % faster over the whole than over (N, V) at once on a CPU.
    rows = max(1, CHUNK_VALUES // V) if student.device.type == "cpu" else N
    with torch.autocast(student.device.type, enabled=False):  # float32 throughout, as the reference
        for i in range(0, N, rows):
            part = slice(i, i + rows)
            rows_kl(part, kl[part], grad[part])
    ctx.save_for_backward(grad)
    ctx.temperature, ctx.dtype, ctx.spent = temperature, student.dtype, False
    return kl


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


class _SparseSoftenedKL(_SoftenedKL):
    """Per-row KL from the teacher's top-k logits (and, with ``rest``, its mass off them) to softmax(s / T), and
    its gradient (backward as `_SoftenedKL`'s)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, student: Tensor, values: Tensor, indices: Tensor,
                rest: Tensor | None, temperature: float) -> Tensor:
        return _chunked_kl(ctx, student, temperature, lambda part, kl, grad: _sparse_kl_rows(
            student[part], values[part], indices[part], None if rest is None else rest[part], temperature, kl,
            grad))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_kl: Tensor) -> tuple[Tensor | None, ...]:
        return (*_SoftenedKL.backward(ctx, grad_kl), None)  # one input more than _SoftenedKL's


def _sparse_kl_rows(student: Tensor, values: Tensor, indices: Tensor, rest: Tensor | None, temperature: float,
                    kl: Tensor, grad: Tensor) -> None:
    """Write the rows' sparse KL into ``kl`` (n,) and its gradient with respect to the softened student logits
    into ``grad`` (n, V); ``values`` and ``indices`` are the teacher's top k (n, k), ``rest`` (n,) the teacher's
    probability off them (None: renormalise the top k instead)."""
    s = torch.div(student.float(), temperature)  # (n, V)
    p_s = torch.softmax(s, dim=-1)
    log_p_t = torch.log_softmax(values.float() / temperature, dim=-1)  # (n, k), over the top k
    if rest is not None:  # the teacher's own probabilities: the top k's share of its mass is 1 - rest
        log_p_t.add_(torch.log1p(-rest.float()).unsqueeze(-1))
    p_t = log_p_t.exp()
    # sum_k p_t (log p_t - log q_k), log q_k = s_k - log Z_s
    log_p_t.sub_(s.gather(-1, indices)).mul_(p_t)
    log_z_s = _log_normaliser(s, p_s)
    if rest is None:  # sum_k p_t = 1
        torch.add(log_p_t.sum(-1), log_z_s, out=kl)
        grad.copy_(p_s).scatter_add_(-1, indices, p_t.neg_())  # d KL / d s = p_s - p_t at its ids
        return
    # The rest as one outcome: + r (log r - log q_rest), q_rest the student's mass off the teacher's top k.
    # d KL / d s_j = q_j - p_j on the top k, q_j (1 - r / q_rest) off them.
    r = rest.float()
    grad.copy_(p_s).scatter_(-1, indices, 0.0)
    q_rest = grad.sum(-1).clamp_(min=torch.finfo(torch.float32).tiny)  # summed, not 1 - sum: no cancellation
    kl_top = log_p_t.sum(-1).add_(log_z_s * (1 - r))
    torch.add(kl_top, torch.xlogy(r, r) - r * q_rest.log(), out=kl)
    grad.mul_((1 - r / q_rest).unsqueeze(-1)).scatter_(-1, indices, p_s.gather(-1, indices).sub_(p_t))


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
    return _mean_over_positions(kl, temperature, mask)


def sparse_distillation_loss(student_logits: Tensor, teacher_values: Tensor, teacher_indices: Tensor,
                             temperature: float = 1.0, mask: Tensor | None = None,
                             teacher_rest: Tensor | None = None) -> Tensor:
    """T^2 times the mean KL divergence from the teacher's distribution, known at its top-k ids, to the student's.

    With ``teacher_rest`` (r, the teacher's probability off its top k at T), the teacher's distribution is its
    own probabilities at its k ids plus r on one outcome "any other id", and the student's is its softmax at
    those ids plus its mass off them. Without, the teacher's top k are renormalised, softmax(values / T), and
    the student's softmax is read at those ids (see the module docstring). With k = V both are
    `logit_distillation_loss`.

    Args:
        student_logits: (..., V) scores.
        teacher_values: (..., k) the teacher's largest logits; no gradient flows into them.
        teacher_indices: (..., k) their token ids (any integer dtype).
        temperature: T, dividing both sides' logits.
        mask: ``student_logits.shape[:-1]``, True where a position counts; None counts all.
        teacher_rest: ``student_logits.shape[:-1]``, the teacher's softmax(logits / T) summed off its top k.

    Returns:
        A scalar; 0 (attached to the graph) when no position counts.
    """
    V, k = student_logits.shape[-1], teacher_values.shape[-1]
    rest = None if teacher_rest is None else teacher_rest.detach().reshape(-1)
    kl = _SparseSoftenedKL.apply(student_logits.reshape(-1, V), teacher_values.detach().reshape(-1, k),
                                 teacher_indices.reshape(-1, k).long(), rest, temperature)  # (N,)
    return _mean_over_positions(kl, temperature, mask)


def _mean_over_positions(kl: Tensor, temperature: float, mask: Tensor | None) -> Tensor:
    """T^2 times the mean of the per-row ``kl`` (N,) over the rows ``mask`` counts (all when None)."""
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
        teacher_top_k: Distil from the teacher's k largest logits per position and its mass off them,
            cached per row (sparse distillation, see the module docstring): a row seen before, in this run or
            an earlier one, needs no teacher pass, so over a fixed dataset the teacher runs in the first epoch
            only. Forward KL only; best with a low temperature (docs/distillation.md). None: the dense loss
            from a live teacher.
        teacher_cache: With ``teacher_top_k``, the directory of the cached top-k logits (kept in a
            subdirectory per teacher, precision, k and temperature); None: ``teacher-topk`` in lmforge's cache
            (``$LMFORGE_CACHE``, default ~/.cache/lmforge). Hits and misses (rows) are logged as
            ``metric/logit_distillation/teacher_cache_hits`` and ``.../teacher_cache_misses``.
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
        teacher_top_k: int | None = None,
        teacher_cache: str | None = None,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"LogitDistillation: temperature must be positive, got {temperature}.")
        if alpha < 0 or hard_loss_weight < 0:
            raise ValueError(f"LogitDistillation: alpha and hard_loss_weight must be non-negative, got "
                             f"{alpha} and {hard_loss_weight}.")
        if teacher_top_k is not None and teacher_top_k < 1:
            raise ValueError(f"LogitDistillation: teacher_top_k must be at least 1 or null, got {teacher_top_k}.")
        if teacher_top_k is not None and reverse:
            raise ValueError("LogitDistillation: reverse must be false with teacher_top_k (the cached top-k loss is "
                             "the forward KL only), got reverse=true. Set model.distiller.init_args.teacher_top_k: "
                             "null for the reverse KL from a live teacher.")
        self.teacher = teacher
        self.temperature = temperature
        self.alpha = alpha
        self.objective_weight = hard_loss_weight
        self.reverse = reverse
        self.masked_only = masked_only
        self.teacher_dtype = teacher_dtype
        self.teacher_top_k = teacher_top_k
        self.teacher_cache = teacher_cache
        self._teacher: FrozenTeacher | None = None
        self._cache: TopKCache | None = None
        self._causal = False

    def setup(self, model: Host) -> None:
        self._causal = objective_task(model.objective) == "causal_lm"
        if self.masked_only and self._causal:
            raise ValueError(
                f"LogitDistillation: masked_only must be false with the causal objective {type(model.objective).__name__} "
                "(every position predicts a token); it selects the masked positions of a masked-LM objective."
            )
        self._teacher = load_teacher(self.teacher, model, self.teacher_dtype)
        vocab = self._teacher.config.vocab_size
        if self.teacher_top_k is not None and self.teacher_top_k > vocab:
            raise ValueError(f"LogitDistillation: teacher_top_k must be at most the vocabulary size {vocab}, got "
                             f"{self.teacher_top_k}. Lower model.distiller.init_args.teacher_top_k.")
        self._cache = None  # opened at the first step, once the teacher's precision is known

    def loss(self, ctx: StepContext) -> Tensor | LossOutput:
        student_logits = ctx.outputs.logits
        # In the student's precision unless teacher_dtype says otherwise; inference mode, as the KL keeps
        # nothing of the teacher's logits for backward.
        dtype = next(ctx.backbone.parameters()).dtype if self.teacher_dtype is None and ctx.backbone is not None else None
        inputs = ctx.objective.model_inputs(ctx.batch)
        mask = distillation_positions(ctx.batch, self._causal, self.masked_only) if student_logits.ndim == 3 else None
        if self.teacher_top_k is None:
            teacher_logits = self._teacher.logits(inputs, dtype)
            return self.alpha * logit_distillation_loss(student_logits, teacher_logits, self.temperature, mask,
                                                        self.reverse)
        top, misses = self._top_k(inputs, dtype)
        loss = sparse_distillation_loss(student_logits, top["values"], top["indices"], self.temperature, mask,
                                        top["rest"])
        B = len(top["values"])
        counts = torch.tensor([B - misses, misses], dtype=torch.float32, device=student_logits.device)
        return LossOutput(self.alpha * loss, {"teacher_cache_hits": counts[0], "teacher_cache_misses": counts[1]})

    def _top_k(self, inputs: dict[str, Tensor], dtype: torch.dtype | None) -> tuple[dict[str, Tensor], int]:
        """The teacher's top-k logits and ids (``values``, ``indices``: (B, ..., k)) and its probability off them
        at T (``rest``: (B, ...)) for the rows of ``inputs``, from the cache where it has them, from the teacher
        (then stored) for the others; and how many rows missed."""
        if self._cache is None:
            root = Path(self.teacher_cache) if self.teacher_cache else default_cache_dir() / "teacher-topk"
            self._cache = TopKCache.for_teacher(root, self._teacher.model, self.teacher_top_k,
                                                self._teacher.logits_dtype(dtype), f"T={self.temperature!r}")
        keys = row_keys(inputs)
        found = self._cache.lookup(keys)
        missing = [i for i, entry in enumerate(found) if entry is None]
        if missing:
            device = inputs["input_ids"].device
            rows = torch.tensor(missing, device=device)
            logits = self._teacher.logits({k: v.index_select(0, rows) for k, v in inputs.items()}, dtype)
            values, indices = logits.topk(self.teacher_top_k, dim=-1, sorted=False)
            index_dtype = torch.int16 if logits.shape[-1] <= torch.iinfo(torch.int16).max + 1 else torch.int32
            self._cache.add([keys[i] for i in missing], values=values, indices=indices.to(index_dtype),
                            rest=probability_off_top_k(logits, indices, self.temperature))
            found = self._cache.lookup(keys)
        device = inputs["input_ids"].device
        return {name: torch.stack([entry[name] for entry in found]).to(device, non_blocking=True)
                for name in ("values", "indices", "rest")}, len(missing)


def probability_off_top_k(logits: Tensor, indices: Tensor, temperature: float) -> Tensor:
    """(...,) softmax(logits / T) summed off ``indices`` (..., k), the ``teacher_rest`` of
    `sparse_distillation_loss`: exactly 0 when they are every id."""
    scaled = logits.float() / temperature  # (..., V)
    log_z = torch.logsumexp(scaled, dim=-1)
    return torch.logsumexp(scaled.scatter_(-1, indices, float("-inf")), dim=-1).sub_(log_z).exp_()
