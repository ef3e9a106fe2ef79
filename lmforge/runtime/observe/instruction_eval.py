"""Instruction tuning, measured by what the model answers: exact match and sample generations.

At the end of every validation (not the sanity check) `InstructionEval` answers held-out instructions of
the validation split (`lmforge.core.data.InstructionData`'s ``val_conversations``: the first
``max_examples``, the same ones every time) greedily through the run's chat template
(`lmforge.core.generation.generate_responses`), and

- logs ``val/exact_match``: the share of responses equal to the reference answer, surrounding whitespace
  aside (`lmforge.core.data.instruction.exact_match`); a ``ModelCheckpoint`` or ``EarlyStopping`` can
  monitor it (``mode: max``);
- records the first ``samples`` of them (instruction, reference, response, whether they match) as
  `lmforge.runtime.observe.ValidationSamples` does for pre-training: appended to
  ``<log_dir>/samples.jsonl`` and, for each ``WandbLogger``, a W&B Table (key ``samples``, every row so far,
  with a ``step`` column).

The validation loss of the same run (``val/loss``) is the objective's mean loss over the response tokens,
the only ones the instruction data labels. Every rank generates the same answers (a sharded model needs all
ranks in each forward pass); rank 0 writes the samples.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback

from lmforge.core.backbone import max_positions
from lmforge.core.data.instruction import encode_prompt, exact_match
from lmforge.core.generation import generate_responses, prompt_and_reference
from lmforge.runtime.observe.samples import record_samples

log = logging.getLogger(__name__)


class InstructionEval(Callback):
    """Logs ``val/exact_match`` of greedy answers to held-out instructions, and sample answers, at each validation.

    Args:
        max_examples: Validation conversations answered (the first ones of the split); None answers all.
        max_new_tokens: Tokens generated per answer at most.
        batch_size: Prompts generated together.
        samples: Answers recorded per validation in ``samples.jsonl`` and the W&B Table.
        filename: File in the run's log directory that receives the sample rows as JSON lines; None for none.
        table_key: Key of the W&B Table.
    """

    def __init__(self, max_examples: int | None = 128, max_new_tokens: int = 32, batch_size: int = 32,
                 samples: int = 4, filename: str | None = "samples.jsonl", table_key: str = "samples") -> None:
        super().__init__()
        for key, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
            if value < 1:
                raise ValueError(f"InstructionEval: {key} must be at least 1, got {value}.")
        if max_examples is not None and max_examples < 1:
            raise ValueError(f"InstructionEval: max_examples must be at least 1 (or null for all), got {max_examples}.")
        if samples < 0:
            raise ValueError(f"InstructionEval: samples must be >= 0, got {samples}.")
        self.max_examples = max_examples
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.samples = samples
        self.filename = filename
        self.table_key = table_key
        self.rows: list[dict[str, Any]] = []
        self._warned_long = False
        #: The last validation's exact match (None before the first).
        self.exact_match: float | None = None

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        data = trainer.datamodule
        conversations = list(getattr(data, "val_conversations", None) or [])[: self.max_examples]
        if not conversations:
            log.info("InstructionEval: the data has no validation instructions (use InstructionData); nothing to "
                     "score.")
            return
        questions, references = zip(*(prompt_and_reference(c) for c in conversations))
        answers = self.answer_fitting(pl_module, list(questions), data.template)
        correct = [ref is not None and exact_match(a, ref) for a, ref in zip(answers, references)]
        self.exact_match = sum(correct) / len(correct)
        pl_module.log("val/exact_match", torch.tensor(self.exact_match), prog_bar=True)
        log_dir = trainer.log_dir  # a collective call: every rank asks
        if not trainer.is_global_zero or self.samples == 0:
            return
        step = trainer.fit_loop.epoch_loop._batches_that_stepped  # the step val/loss is logged at
        rows = [{"step": step, "instruction": q[-1]["content"], "reference": ref, "response": a, "exact_match": ok}
                for q, ref, a, ok in list(zip(questions, references, answers, correct))[: self.samples]]
        record_samples(trainer, rows, self.rows, step, log_dir, self.filename, self.table_key)

    def answer_fitting(self, pl_module: LightningModule, questions: list[list[dict[str, str]]], template: str
                       ) -> list[str]:
        """`answer` for the questions whose prompts leave the model room for an answer; an empty answer (a miss)
        for the others, counted in a warning once."""
        limit = max_positions(pl_module.backbone.config)
        fits = [limit is None or len(encode_prompt(pl_module.tokenizer, q, template)) < limit for q in questions]
        if not all(fits) and not self._warned_long:
            log.warning("InstructionEval: %d of %d validation prompts leave no room for an answer in the model's %d "
                        "positions; they count as misses.", fits.count(False), len(fits), limit)
            self._warned_long = True
        answered = iter(self.answer(pl_module, [q for q, ok in zip(questions, fits) if ok], template)
                        if any(fits) else [])
        return [next(answered) if ok else "" for ok in fits]

    def answer(self, pl_module: LightningModule, questions: list[list[dict[str, str]]], template: str) -> list[str]:
        """Greedy answers of the module's current weights (in eval mode, then back to how it was)."""
        backbone = pl_module.backbone
        was_training = backbone.training
        backbone.eval()
        # A compiled backbone would recompile for every generated length; answers run eagerly.
        eager = torch.compiler.set_stance("force_eager") if getattr(pl_module, "compile_backbone", False) else nullcontext()
        try:
            with eager:
                return generate_responses(backbone, pl_module.tokenizer, questions, template,
                                          max_new_tokens=self.max_new_tokens, batch_size=self.batch_size)
        finally:
            backbone.train(was_training)
