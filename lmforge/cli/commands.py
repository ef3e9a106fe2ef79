"""The command table, and lmforge's own tools: ``recipes``, ``plugins``, ``export``, ``generate``, ``plot``,
``pii-scan``, ``memorization`` and ``predict MODEL``.

Each tool imports what it needs when it runs, so that listing recipes or plugins does not import torch.
Further commands come from the ``lmforge.commands`` entry-point group (`lmforge.cli.main.find_command`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

#: The LightningCLI subcommands (`lmforge.cli.training`), with their help.
LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
TRAINING_HELP = {
    "fit": "train: lmforge fit --config RECIPE [--section.key VALUE ...] [--ckpt_path last: continue the "
           "newest run]",
    "validate": "one pass over the validation split: lmforge validate --config RECIPE --ckpt_path CKPT",
    "test": "one pass over data.test (else the validation split): lmforge test --config RECIPE --ckpt_path CKPT",
    "predict": "lmforge predict MODEL --input FILE --output FILE (or Lightning's: predict --config ...)",
}
#: lmforge's own tools: ``lmforge NAME`` runs the function of that name below (``-`` read as ``_``).
TOOLS_HELP = {
    "recipes": "list the bundled recipes; recipes show NAME; recipes cp NAME [DEST]",
    "plugins": "list installed plugins; plugins show NAME; plugins new KIND NAME",
    "export": "write a checkpoint as a Hugging Face model directory (--adapter-only: a LoRA adapter directory)",
    "generate": "answer instructions with a tuned causal LM: generate MODEL --prompt TEXT | --input FILE",
    "plot": "plot logged metrics of one or more runs",
    "pii-scan": "count personal data in data files, without training; exit 1 if found (CI gate)",
    "memorization": "exposure of the canaries a model was trained with (Secret Sharer)",
}


TOOLS = tuple(TOOLS_HELP)


def tool(name: str) -> Callable[[list[str]], int]:
    """The function that runs the tool ``name`` (``pii-scan`` -> `pii_scan`)."""
    return globals()[name.replace("-", "_")]


def recipes(argv: list[str]) -> int:
    from lmforge.cli.recipes import bundled_recipes, describe

    parser = argparse.ArgumentParser(prog="lmforge recipes", description="List, show or copy the bundled recipes.")
    sub = parser.add_subparsers(dest="action")
    show = sub.add_parser("show", help="print a recipe")
    show.add_argument("name")
    cp = sub.add_parser("cp", help="copy a recipe into a directory for editing")
    cp.add_argument("name")
    cp.add_argument("dir")
    args = parser.parse_args(argv)
    found = bundled_recipes()
    if args.action is None:
        width = max(len(n) for n in found)
        for name, path in found.items():
            print(f"{name:<{width}}  {describe(path)}")
        return 0
    if args.name not in found:
        print(f"lmforge recipes: no recipe {args.name!r}; bundled: {', '.join(found)}", file=sys.stderr)
        return 2
    if args.action == "show":
        print(found[args.name].read_text(encoding="utf-8"), end="")
        return 0
    target = Path(args.dir)
    target.mkdir(parents=True, exist_ok=True)
    dest = target / found[args.name].name
    if dest.exists():
        print(f"lmforge recipes: {dest} exists; not overwriting it.", file=sys.stderr)
        return 1
    shutil.copyfile(found[args.name], dest)
    print(dest)
    return 0


def plugins(argv: list[str]) -> int:
    from lmforge.cli.plugins import main

    return main(argv)


def export(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lmforge export", description="Write a checkpoint as a Hugging Face model directory (safetensors)."
    )
    parser.add_argument("ckpt", help="an lmforge checkpoint (.ckpt)")
    parser.add_argument("dir", help="output directory: new or empty (see --force)")
    parser.add_argument("--force", action="store_true",
                        help="export into a non-empty directory, replacing the files an export writes")
    parser.add_argument("--adapter-only", action="store_true",
                        help="a LoRA checkpoint: write its adapters as a peft adapter directory instead of the "
                             "merged model")
    parser.add_argument("--base", default=None, metavar="DIR",
                        help="a LoRA checkpoint: its base model's directory, if not where training found it")
    args = parser.parse_args(argv)
    from lmforge.cli.export import export_checkpoint

    try:
        out = export_checkpoint(args.ckpt, args.dir, force=args.force, adapter_only=args.adapter_only, base=args.base)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"lmforge export: {exc}", file=sys.stderr)
        return 1
    print(f"exported {args.ckpt} to {out}")
    return 0


def generate(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lmforge generate",
        description="Answer instructions with an instruction-tuned causal LM, through its chat template (greedy, "
                    "up to the end-of-text token). MODEL: an exported directory, a LoRA adapter directory "
                    "(export --adapter-only) or an lmforge checkpoint.",
    )
    parser.add_argument("model", help="a model directory, an adapter directory or an lmforge checkpoint (.ckpt)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", action="append", help="an instruction (repeat for several)")
    source.add_argument("--input", help="txt (one instruction per line), or jsonl/csv/parquet with a messages or a "
                                        "prompt column (and a response column: the reference answer)")
    parser.add_argument("--output", default=None, help="write the answers here (jsonl) instead of printing them")
    parser.add_argument("--system", default=None, help="a system message before each --prompt")
    parser.add_argument("--prompt-column", default="prompt")
    parser.add_argument("--response-column", default="response")
    parser.add_argument("--messages-column", default="messages")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--sample", action="store_true", help="sample instead of decoding greedily")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chat-template", default=None,
                        help="a Jinja chat template, or 'default' for lmforge's (default: the tokenizer's own)")
    parser.add_argument("--base", default=None, metavar="DIR",
                        help="the base model's directory, for an adapter directory or a LoRA checkpoint")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    args = parser.parse_args(argv)
    from lmforge.cli.generate import device_for, generate_file, load_generator, read_conversations
    from lmforge.core.data.files import DataFileError

    try:
        if args.input is not None:
            conversations = read_conversations(args.input, args.prompt_column, args.response_column,
                                               args.messages_column)
        else:
            system = [{"role": "system", "content": args.system}] if args.system else []
            conversations = [([*system, {"role": "user", "content": p}], None) for p in args.prompt]
        model, tokenizer = load_generator(args.model, args.base)
        model.to(device_for(args.device))
        rows = generate_file(model, tokenizer, conversations, args.output, args.chat_template,
                             max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, do_sample=args.sample,
                             temperature=args.temperature, seed=args.seed)
    except (FileNotFoundError, ValueError, DataFileError) as exc:
        print(f"lmforge generate: {exc}", file=sys.stderr)
        return 1
    if args.output is None:
        for row in rows:
            print(row["response"] if args.prompt else json.dumps(row, ensure_ascii=False))
    scored = [r["exact_match"] for r in rows if "exact_match" in r]
    if args.output is not None:
        print(f"wrote {len(rows)} answers to {args.output}")
    if scored:
        print(f"exact match: {sum(scored)}/{len(scored)} ({100.0 * sum(scored) / len(scored):.1f}%)", file=sys.stderr)
    return 0


def plot(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lmforge plot",
        description="Write PNG charts of runs' metrics.csv (loss terms, validation metrics, learning rate, "
                    "throughput, bias scores); several runs are overlaid for comparison.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR",
                        help="a run directory (runs/<recipe>/version_N) or a directory holding exactly one")
    parser.add_argument("--metrics", help="comma-separated metric names or globs (default: the standard charts), "
                                          "e.g. loss/total,val/loss or 'bias/*'")
    parser.add_argument("--out", help="output directory (default: RUN_DIR/plots for one run, ./plots for several)")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("matplotlib") is None:
        print("lmforge plot: needs matplotlib; install it with `pip install 'lmforge[plot]'`.", file=sys.stderr)
        return 1
    from lmforge.cli.plot import PlotError, plot_runs

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    try:
        written = plot_runs(args.runs, metrics, args.out)
    except PlotError as exc:
        print(f"lmforge plot: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


def predict(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lmforge predict",
        description="Label a file with a fine-tuned classifier or tagger and write the predictions as jsonl "
                    "(label names and probabilities). `lmforge predict --config ...` is Lightning's predict "
                    "subcommand instead.",
    )
    parser.add_argument("model", help="an lmforge checkpoint (.ckpt) or an exported model directory")
    parser.add_argument("--input", required=True, help="txt (one text per line), jsonl, csv or parquet file")
    parser.add_argument("--output", required=True, help="where to write the predictions (jsonl)")
    parser.add_argument("--text-column", default="text",
                        help="column with the text, or with the word list for a tagger (default: text)")
    parser.add_argument("--text-pair-column", default=None, help="column with the second text of a pair")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=None,
                        help="truncate inputs to this many tokens (default: the model's positions)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    args = parser.parse_args(argv)
    from lmforge.cli.predict import predict_file
    from lmforge.core.data.files import DataFileError

    try:
        n = predict_file(args.model, args.input, args.output, args.text_column, args.text_pair_column,
                         args.batch_size, args.max_length, args.device)
    except (FileNotFoundError, ValueError, DataFileError, RuntimeError) as exc:
        print(f"lmforge predict: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {n} predictions to {args.output}")
    return 0


def pii_scan(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lmforge pii-scan",
        description="Count personal data (e-mail addresses, phone numbers, card numbers, IBANs, IP addresses, URLs "
                    "with credentials; names with --spacy-model) in data files, as TextData reads them, and show a "
                    "few examples, redacted. Exit codes: 0 none of the --fail-on types found, 1 some found, "
                    "2 usage error.",
    )
    parser.add_argument("files", nargs="+", metavar="FILES", help="txt, jsonl, csv or parquet files or globs "
                        "(lmforge:... for bundled data)")
    parser.add_argument("--text-column", default="text", help="column with the text in jsonl/csv/parquet (default: text)")
    parser.add_argument("--fail-on", default="any", help="exit 1 when any of these types is found: 'any' (default), "
                        "'none' (report only) or comma-separated types, e.g. EMAIL,CREDIT_CARD")
    parser.add_argument("--entities", default=None, help="comma-separated types to look for (default: all that "
                        "need no model, and PERSON with --spacy-model)")
    parser.add_argument("--spacy-model", default=None, help="an installed spaCy pipeline with NER, for PERSON")
    parser.add_argument("--examples", type=int, default=3, help="redacted examples shown per type (default: 3)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the counts and examples as JSON")
    args = parser.parse_args(argv)  # a usage error exits 2
    from lmforge.cli.pii_scan import FOUND, USAGE, failing, format_report, parse_fail_on, scan, write_json
    from lmforge.core.data.files import DataFileError
    from lmforge.plugins.privacy.pii import PiiDetector

    try:
        entities = [e.strip().upper() for e in args.entities.split(",")] if args.entities else None
        detector = PiiDetector(entities, spacy_model=args.spacy_model)
        fail_on = parse_fail_on(args.fail_on, detector.entities)
        report = scan(args.files, detector, args.text_column, args.examples)
    except (ValueError, ImportError, DataFileError) as exc:
        print(f"lmforge pii-scan: {exc}", file=sys.stderr)
        return USAGE
    print(format_report(report, detector.entities))
    if args.json:
        write_json(report, args.json)
    found = failing(report, fail_on)
    if found:
        print(f"\nlmforge pii-scan: found {', '.join(found)} (--fail-on {args.fail_on}): exit 1", file=sys.stderr)
        return FOUND
    return 0


def memorization(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lmforge memorization",
        description="Exposure of the canaries a causal LM was trained with (Carlini et al. 2019, The Secret Sharer): "
                    "log2 of the candidate secrets minus log2 of the true secret's rank by log-perplexity.",
    )
    parser.add_argument("model", help="an lmforge checkpoint (.ckpt) or a local Hugging Face model directory")
    parser.add_argument("--canaries", default=None, help="the run's canaries.json (default: those kept in the "
                        "checkpoint)")
    parser.add_argument("--exact-limit", type=int, default=100_000, help="rank exactly up to this many candidates; "
                        "beyond, extrapolate from --samples (default: 100000)")
    parser.add_argument("--samples", type=int, default=10_000, help="candidates sampled to extrapolate (default: 10000)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the sampled candidates")
    parser.add_argument("--batch-size", type=int, default=256, help="sequences per forward pass")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    args = parser.parse_args(argv)
    from lmforge.cli.memorization import run

    try:
        print(run(args.model, args.canaries, args.exact_limit, args.samples, args.seed, args.batch_size, args.device))
    except (FileNotFoundError, ValueError, OSError) as exc:
        print(f"lmforge memorization: {exc}", file=sys.stderr)
        return 2
    return 0
