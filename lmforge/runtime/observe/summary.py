"""The end-of-run summary of ``lmforge fit``: how the run ended, where it is, and what to run next.

`RunSummary` records the validation metrics of every validation during fitting; `RunSummary.text` turns
them into a few lines: the final and best ``val/loss`` (with perplexity for language models) and the
metric the checkpoint callback monitors (``val/macro_f1`` for a classifier), the energy and emissions when an
`EnergyMonitor` measured them, the best checkpoint, the run directory and the ``lmforge export`` and
``lmforge plot`` commands for this run. The CLI prints it on the first rank when ``fit`` returns.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from lmforge.runtime.observe.energy import energy_summary

LOSS = "val/loss"
PERPLEXITY = "val/perplexity"


class RunSummary(Callback):
    """Keeps each validation's ``val/*`` metrics during ``fit``, for the end-of-run summary."""

    def __init__(self) -> None:
        self.history: list[tuple[int, dict[str, float]]] = []

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if metrics:
            self.history.append((trainer.global_step, metrics))

    def text(self, trainer: Trainer) -> str:
        """The summary (reads no collective: call it on one rank)."""
        run_dir = _run_dir(trainer)
        lines = [f"lmforge: trained to step {trainer.global_step}" + (f"; the run is in {_shown(run_dir)}" if run_dir else "")]
        checkpoint = trainer.checkpoint_callback if isinstance(trainer.checkpoint_callback, ModelCheckpoint) else None
        monitor = checkpoint.monitor if checkpoint is not None else None
        for key in dict.fromkeys([LOSS, *([monitor] if monitor and monitor.startswith("val/") else [])]):
            mode = checkpoint.mode if checkpoint is not None and key == monitor else "min"
            line = self._metric_line(key, mode)
            if line:
                lines.append(line)
        if not self.history:
            lines.append("  no validation ran (trainer.limit_val_batches or val_check_interval)")
        energy = energy_summary(trainer)
        if energy:
            lines.append(energy)
        best, by_monitor = _best_checkpoint(checkpoint)
        if best is not None and by_monitor:
            lines.append(f"  best checkpoint: {_shown(best)}" + (f" (by {monitor})" if monitor else ""))
        elif best is not None:
            lines.append(f"  last checkpoint: {_shown(best)}")
        elif checkpoint is None:
            lines.append("  no checkpoint was saved: the recipe has no ModelCheckpoint callback")
        next_commands = []
        if best is not None:
            name = run_dir.parent.name if run_dir is not None else "model"
            next_commands.append(f"lmforge export {_shown(best)} {name}-model")
        if run_dir is not None and (run_dir / "metrics.csv").is_file():
            plot = f"lmforge plot {_shown(run_dir)}"
            next_commands.append(plot if importlib.util.find_spec("matplotlib") is not None
                                 else f"pip install 'lmforge[plot]'; {plot}")
        if next_commands:
            lines.append("next:")
            lines += [f"  {command}" for command in next_commands]
        return "\n".join(lines)

    def _metric_line(self, key: str, mode: str) -> str | None:
        values = [(step, metrics[key]) for step, metrics in self.history if key in metrics]
        if not values:
            return None
        pick = min if mode == "min" else max
        best_step, best = pick(values, key=lambda item: item[1])
        final = values[-1][1]
        # Perplexity where the objective reports it (language models), not for a classifier's loss.
        perplexity = key == LOSS and any(PERPLEXITY in metrics for _, metrics in self.history)
        return f"  {key}: final {_value(final, perplexity)}, best {_value(best, perplexity)} at step {best_step}"


def _value(value: float, perplexity: bool) -> str:
    if perplexity and math.isfinite(value):
        return f"{value:.4f} (perplexity {math.exp(min(value, 700.0)):.4g})"
    return f"{value:.4f}"


def _run_dir(trainer: Trainer) -> Path | None:
    """The first logger's directory, read from the logger (``Trainer.log_dir`` would be a collective)."""
    for logger in trainer.loggers:
        log_dir = getattr(logger, "log_dir", None)
        if log_dir:
            return Path(log_dir)
    return None


def _best_checkpoint(checkpoint: ModelCheckpoint | None) -> tuple[Path | None, bool]:
    """The best checkpoint and True; the last one and False when there is no best (no validation ran)."""
    if checkpoint is None:
        return None, False
    for path, best in ((checkpoint.best_model_path, True), (checkpoint.last_model_path, False)):
        if path and Path(path).exists():
            return Path(path), best
    return None, False


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies inside it, as a user types it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def print_summary(trainer: Any, stream: Any) -> None:
    """Write the `RunSummary` text of ``trainer`` to ``stream`` on the global rank 0 (nothing otherwise)."""
    if trainer is None or not trainer.is_global_zero:
        return
    for callback in trainer.callbacks:
        if isinstance(callback, RunSummary):
            stream.write(callback.text(trainer) + "\n")
            stream.flush()
            return
