"""What the model says at each validation: generations (causal LM) or masked-token predictions (MLM).

At the end of every validation (not the sanity check) `ValidationSamples` runs
the model on fixed prompts and records one row per prompt:

- causal LM (an objective whose ``auto_model`` is ``AutoModelForCausalLM``):
  the prompt, preceded by the tokenizer's BOS token (a document start), is
  continued by ``max_new_tokens`` tokens, greedily, or sampled with a fixed
  seed so that every validation draws the same way;
- masked LM (``AutoModelForMaskedLM``): every ``{mask}`` in the prompt is
  replaced by the tokenizer's mask token and predicted; the row holds the
  filled-in text and the ``top_k`` candidates per mask with probabilities;
- other objectives (classification): nothing.

The rows go to a W&B Table (key ``samples``, all rows so far, with a
``step`` column) for each ``WandbLogger``, and are appended to
``<log_dir>/samples.jsonl`` (one JSON object per row) for every run with a
log directory, so that runs without W&B keep them too.
"""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback

from lmforge.core.generation import one_cpu_thread
from lmforge.runtime.observe.wandb import wandb_loggers

log = logging.getLogger(__name__)

MASK = "{mask}"
CAUSAL = "AutoModelForCausalLM"
MASKED = "AutoModelForMaskedLM"
DEFAULT_PROMPTS = {
    CAUSAL: ["The weather in the morning was", "She opened the door and", "After dinner, the family"],
    MASKED: [f"The cat sat on the {MASK}.", f"She opened the {MASK} and walked in.",
             f"After dinner, the family {MASK} a walk in the park."],
}


class ValidationSamples(Callback):
    """Logs the model's generations (causal LM) or masked-token predictions (MLM) on fixed prompts
    at the end of each validation.

    Args:
        prompts: Texts to continue (causal LM) or to fill in (masked LM: write
            ``{mask}`` where a token is to be predicted). None: three built-in
            English prompts for the objective's kind.
        max_new_tokens: Tokens generated per prompt (causal LM).
        do_sample: Sample instead of decoding greedily (causal LM).
        temperature: Sampling temperature when ``do_sample`` is on.
        seed: Seed of the sampling; the same at every validation, so that
            samples differ only because the model changed.
        top_k: Candidates listed per masked position (masked LM).
        filename: File in the run's log directory that receives every row as
            JSON lines; None to write none.
        table_key: Key of the W&B Table.
    """

    def __init__(
        self,
        prompts: list[str] | None = None,
        max_new_tokens: int = 16,
        do_sample: bool = False,
        temperature: float = 1.0,
        seed: int = 0,
        top_k: int = 3,
        filename: str | None = "samples.jsonl",
        table_key: str = "samples",
    ) -> None:
        super().__init__()
        if max_new_tokens < 1:
            raise ValueError(f"ValidationSamples: max_new_tokens must be at least 1, got {max_new_tokens}.")
        if top_k < 1:
            raise ValueError(f"ValidationSamples: top_k must be at least 1, got {top_k}.")
        if temperature <= 0:
            raise ValueError(f"ValidationSamples: temperature must be positive, got {temperature}.")
        self.prompts = list(prompts) if prompts is not None else None
        self.max_new_tokens = max_new_tokens
        self.do_sample = do_sample
        self.temperature = temperature
        self.seed = seed
        self.top_k = top_k
        self.filename = filename
        self.table_key = table_key
        self.rows: list[dict[str, Any]] = []
        self.kind: str | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        auto_model = getattr(getattr(pl_module, "objective", None), "auto_model", None)
        self.kind = auto_model if auto_model in DEFAULT_PROMPTS else None
        if self.kind is None:
            log.info("ValidationSamples: %s is neither a causal nor a masked LM; no samples are logged.", auto_model)
            return
        if self.prompts is None:
            self.prompts = list(DEFAULT_PROMPTS[self.kind])
        if self.kind == MASKED:
            missing = [p for p in self.prompts if MASK not in p]
            if missing:
                raise ValueError(
                    f"ValidationSamples: every prompt of a masked LM must contain {MASK}, got {missing[0]!r}. "
                    f"Write {MASK} where the model should predict a token."
                )

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or self.kind is None or not self.prompts:
            return
        # Every rank runs the model (a sharded model needs all ranks for a forward pass); rank 0 records.
        rows = self.samples(pl_module)
        log_dir = trainer.log_dir  # a collective call: every rank asks
        if not trainer.is_global_zero:
            return
        # The step Lightning logs val/loss at (the number of optimizer steps before this one), so that the
        # samples line up with the validation metrics in every logger.
        step = trainer.fit_loop.epoch_loop._batches_that_stepped
        record_samples(trainer, [{"step": step, **row} for row in rows], self.rows, step, log_dir, self.filename,
                       self.table_key)

    def samples(self, pl_module: LightningModule) -> list[dict[str, Any]]:
        """One row per prompt for the module's current weights."""
        backbone, tokenizer = pl_module.backbone, pl_module.tokenizer
        was_training = backbone.training
        backbone.eval()
        # A compiled backbone would recompile for every generated length; samples run eagerly.
        eager = torch.compiler.set_stance("force_eager") if getattr(pl_module, "compile_backbone", False) else nullcontext()
        try:
            with torch.no_grad(), eager:
                if self.kind == CAUSAL:
                    return [self._generate(backbone, tokenizer, prompt) for prompt in self.prompts]
                return [self._fill(backbone, tokenizer, prompt) for prompt in self.prompts]
        finally:
            backbone.train(was_training)

    def _generate(self, backbone: Any, tokenizer: Any, prompt: str) -> dict[str, Any]:
        device = next(backbone.parameters()).device
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if tokenizer.bos_token_id is not None:
            ids = [tokenizer.bos_token_id, *ids]
        limit = getattr(backbone.config, "n_positions", None) or getattr(backbone.config, "max_position_embeddings", None)
        new_tokens = min(self.max_new_tokens, limit - len(ids)) if limit else self.max_new_tokens
        if new_tokens < 1:
            return {"prompt": prompt, "completion": ""}
        input_ids = torch.tensor([ids], device=device)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        sampling = {"do_sample": True, "temperature": self.temperature, "top_k": None} if self.do_sample else \
            {"do_sample": False}
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), one_cpu_thread(device):
            torch.manual_seed(self.seed)  # seeded sampling that leaves training's RNG alone
            out = backbone.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=new_tokens,
                                    pad_token_id=pad, **sampling)
        completion = tokenizer.decode(out[0, len(ids):].tolist(), skip_special_tokens=True)
        return {"prompt": prompt, "completion": completion}

    def _fill(self, backbone: Any, tokenizer: Any, prompt: str) -> dict[str, Any]:
        device = next(backbone.parameters()).device
        encoded = tokenizer(prompt.replace(MASK, tokenizer.mask_token), return_tensors="pt").to(device)
        ids = encoded["input_ids"][0]
        logits = backbone(**encoded).logits[0]  # (T, V)
        positions = (ids == tokenizer.mask_token_id).nonzero().flatten()
        probs = logits[positions].float().softmax(-1)
        top = probs.topk(min(self.top_k, probs.shape[-1]), dim=-1)
        filled = ids.clone()
        filled[positions] = top.indices[:, 0]
        candidates = [
            ", ".join(f"{tokenizer.decode([int(i)]).strip()} {float(p):.3f}" for p, i in zip(ps, idx))
            for ps, idx in zip(top.values, top.indices)
        ]
        return {"prompt": prompt, "filled": tokenizer.decode(filled.tolist(), skip_special_tokens=True),
                "candidates": " | ".join(candidates)}


def record_samples(trainer: Trainer, rows: list[dict[str, Any]], kept: list[dict[str, Any]], step: int,
                   log_dir: str | None, filename: str | None, table_key: str) -> None:
    """Keep ``rows`` (in ``kept``), append them to ``log_dir/filename`` and log every kept row as a W&B table."""
    kept.extend(rows)
    if filename is not None and log_dir is not None:
        _append_jsonl(Path(log_dir) / filename, rows)
    columns = list(rows[0])
    for logger in wandb_loggers(trainer):
        logger.log_table(table_key, columns=columns, data=[[r[c] for c in columns] for r in kept], step=step)


def _append_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
