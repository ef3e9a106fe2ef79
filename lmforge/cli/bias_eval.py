"""``lmforge bias-eval CKPT_OR_HF_DIR --pairs FILE``: CrowS-Pairs scores of a trained model.

Registered under the ``lmforge.commands`` entry-point group. The model is an
lmforge checkpoint (``.ckpt``; its backbone and tokenizer are rebuilt from the
checkpoint alone) or a local Hugging Face model directory.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lmforge.cli.export import export_checkpoint
from lmforge.plugins.bias.probe import DEFAULT_PAIRS, ModelKind, read_pairs, score_pairs

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def load_model(path: str, kind: ModelKind | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, ModelKind]:
    """A model to probe: an lmforge checkpoint file or a local HF directory.

    Args:
        path: ``.ckpt`` file or HF model directory.
        kind: ``causal`` or ``masked``; None infers it from the model's
            ``architectures`` (``...ForMaskedLM``, ``...ForCausalLM``, ``...LMHeadModel``).
    """
    location = Path(path)
    if location.is_file():
        # The checkpoint holds everything an HF directory does; `lmforge export` writes that directory.
        with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as directory:
            return load_model(str(export_checkpoint(location, directory)), kind)
    if not location.is_dir():
        raise FileNotFoundError(f"{path}: neither a checkpoint file nor a model directory.")
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(location, local_files_only=True)
    if kind is None:
        names = " ".join(config.architectures or [])
        kind = "masked" if "MaskedLM" in names else ("causal" if ("CausalLM" in names or "LMHead" in names) else None)
        if kind is None:
            raise ValueError(f"{path}: cannot tell from its architectures {config.architectures} whether it is a "
                             "causal or a masked LM; pass --kind causal or --kind masked.")
    auto = {"causal": transformers.AutoModelForCausalLM, "masked": transformers.AutoModelForMaskedLM}[kind]
    model = auto.from_pretrained(location, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=True)
    return model, tokenizer, kind


def format_table(table: dict[str, dict[str, float]]) -> str:
    """The per-bias-type table that ``bias-eval`` prints."""
    header = f"{'bias type':<14}{'pairs':>7}{'score':>8}{'stereo':>8}{'anti':>8}{'ties':>6}"
    lines = [header, "-" * len(header)]
    for name, row in table.items():
        if name == "overall":
            lines.append("-" * len(header))
        cells = [f"{row[k]:8.1f}" if not math.isnan(row[k]) else f"{'-':>8}" for k in ("score", "stereo", "antistereo")]
        lines.append(f"{name:<14}{int(row['pairs']):>7}{''.join(cells)}{int(row['ties']):>6}")
    return "\n".join(lines)


def bias_eval(argv: list[str]) -> int:
    """``lmforge bias-eval``: print the CrowS-Pairs score of a model per bias type."""
    parser = argparse.ArgumentParser(
        prog="lmforge bias-eval",
        description="CrowS-Pairs bias scores of a causal or masked LM: the percentage of pairs where the model "
                    "prefers the more stereotypical sentence (sent_more); 50 = no preference.",
    )
    parser.add_argument("model", help="an lmforge checkpoint (.ckpt) or a local Hugging Face model directory")
    parser.add_argument("--pairs", default=DEFAULT_PAIRS, help="CrowS-Pairs CSV (sent_more, sent_less, "
                        f"stereo_antistereo, bias_type); default {DEFAULT_PAIRS}")
    parser.add_argument("--kind", choices=["causal", "masked"], help="model kind (default: inferred)")
    parser.add_argument("--batch-size", type=int, default=64, help="sequences per forward pass")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    args = parser.parse_args(argv)
    try:
        pairs = read_pairs(args.pairs, "--pairs")
        model, tokenizer, kind = load_model(args.model, args.kind)
    except (FileNotFoundError, ValueError, OSError) as exc:
        print(f"lmforge bias-eval: {exc}", file=sys.stderr)
        return 1
    model.to(torch.device(args.device))
    result = score_pairs(model, tokenizer, pairs, kind, args.batch_size)
    print(f"{args.model} ({kind} LM) on {args.pairs}: % of pairs preferring sent_more (50 = no preference)")
    print(format_table(result.table()))
    return 0
