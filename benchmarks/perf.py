"""Performance of lmforge against a plain PyTorch loop and the HF Trainer, on the same work.

Training throughput, for a small GPT-2 (2 layers x 128, causal LM, the quickstart model) and a small
BERT (2 layers x 128, masked LM, 15 % masked freshly each step) built from configs: the bundled corpus,
tokenized once by lmforge's TextData (BPE 4k for GPT-2, WordPiece 4k for BERT) and packed into
blocks of 128 tokens, batches of 16, AdamW (fused as in the recipes, but not the HF runner; lr 2e-3, weight decay 0.1 on matrices, none on 1-D
parameters), warmup-cosine schedule, gradient clipping at 1.0. Each runner trains in its own fresh
process, and the runners alternate round by round:

  plain            a careful hand-written loop (HF model from config, the same AdamW groups)
  plain-tuned      the same loop with lmforge's host-allocator settings (lmforge/runtime/allocator.py)
  lmforge          ``lmforge fit`` with the bundled recipe as users run it (quickstart / mlm-pretrain:
                   progress bar, CSV logger, checkpoints, TokenThroughput/ValidationSamples callbacks)
  lmforge-bare     ``lmforge fit`` with a bare trainer (no logger, bar, checkpoints, validation)
  hf               ``transformers.Trainer`` (report_to none, no eval, logging_steps large; BERT
                   through DataCollatorForLanguageModeling)
  lmforge+plugins  lmforge-bare plus L2Penalty (regularizer), TokenNoise (batch augmenter) and
                   CounterfactualAugmentation (data-stage bias mitigator: two-sided CDA)

Every runner reads the same blocks in the same order-independent way (shuffled batches of
16 x 128), counts B*T tokens per step, and records the wall time at the end of every step;
only the steps after ``--warmup`` count. Ratios are medians of per-round ratios (with min
and max): the CPUs here are shared and noisy, and alternation is what makes them comparable.
Every process runs torch with one intra-op thread (OMP_NUM_THREADS=1, torch.set_num_threads(1)).

Also measured: startup (command to the first training step, in wall and in CPU seconds, and peak
RSS, as ratios to the plain loop; ``lmforge plugins``; ``lmforge --help``), the data pipeline (TextData tokenize+pack vs the fast tokenizer called directly; the
share of step time spent between one step's end and the next one's start, i.e. waiting for
data), and with ``--scaling`` tokens/s and peak RSS for widths/depths doubling three times and
for block sizes 64..512. ``--only distill``: a logit-distillation step (dense, and from cached top-k teacher
logits) against a plain student step (benchmarks/perf_distill.py); ``--only tokenize``: TextData's tokenize+pack against the tokenizer's own
``encode_batch`` on generated text of 10 and 100 MB (``--tokenize-mb``), time and peak RSS, each in a fresh
process (benchmarks/perf_tokenize.py). Distillation's effect on quality: benchmarks/distillation.py.

    python benchmarks/perf.py --rounds 5 --out bench.json        # ~20 min on 2 CPU cores (~15 s a run)
    python benchmarks/perf.py --rounds 3 --steps 30 --scaling     # plus the scaling section
    python benchmarks/perf.py --only overhead --rounds 5 --steps 30 --warmup 5   # the fixed cost around a tiny step
    python benchmarks/perf.py --only distill --rounds 30                       # KD step / student step (~3 min)
    python benchmarks/perf.py --only tokenize --rounds 3 --tokenize-mb 10,100  # tokenize+pack vs encode_batch
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
       "MKL_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
       "WANDB_MODE": "disabled"}
LMFORGE = [sys.executable, "-m", "lmforge"]
MODEL = {"n_layer": 2, "n_embd": 128, "n_head": 4}  # GPT-2 (the quickstart model)
BERT = {"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 4, "intermediate_size": 512}
LR, WEIGHT_DECAY, WARMUP, CLIP, MASK = 2e-3, 0.1, 50, 1.0, 0.15
#: Per model: the bundled recipe lmforge runs, its backbone config, the config key of the positions,
#: and the tokenizer lmforge trains for it (BPE for GPT-2, WordPiece for BERT).
MODELS: dict[str, dict[str, Any]] = {
    "gpt2": {"recipe": "quickstart", "config": MODEL, "positions": "n_positions",
             "tokenizer": {"vocab_size": 4000}},
    "bert": {"recipe": "mlm-pretrain", "config": BERT, "positions": "max_position_embeddings",
             "tokenizer": {"algorithm": "wordpiece", "vocab_size": 4000}},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternation rounds")
    parser.add_argument("--steps", type=int, default=40, help="training steps per run")
    parser.add_argument("--warmup", type=int, default=8, help="steps left out of the timing")
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--models", default="gpt2,bert", help="comma-separated: gpt2 (causal LM), bert (masked LM)")
    parser.add_argument("--model", default="gpt2", choices=list(MODELS), help=argparse.SUPPRESS)  # a worker's
    parser.add_argument("--scaling", action="store_true", help="also run the model-size/block-size scaling")
    parser.add_argument("--only", default="", help="comma-separated sections: throughput,startup,data,scaling,overhead,distill,tokenize")
    parser.add_argument("--runners", default="", help="comma-separated subset of the throughput runners "
                        "(plain,plain-tuned,lmforge,lmforge-bare,hf,lmforge+plugins); ratios need both sides")
    parser.add_argument("--tokenize-mb", default="10,100", help="tokenize section: sizes of generated text in MB "
                        "(add 1000 for the 1 GB point)")
    parser.add_argument("--out", default="bench.json", help="JSON results")
    parser.add_argument("--work-dir", default=None, help="where data, recipes and runs go (default: a temp dir)")
    # internal: run one runner in this (fresh) process
    parser.add_argument("--worker", choices=["plain", "plain-tuned", "hf", "data"], help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser.parse_args()


# -- preparation (parent) ---------------------------------------------------------------------------

def prepare(work: Path, args: argparse.Namespace, model: str = "gpt2") -> dict[str, Any]:
    """Tokenize and pack the corpus once with lmforge's TextData; every runner reads these blocks and tokenizer.

    Files go to ``work/<model>/``: ``blocks.pt``, ``tokenizer/`` and ``meta.json``.
    """
    os.environ.update({k: ENV[k] for k in ("HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM")})
    import torch

    from lmforge.core.data.text import TextData
    from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining

    out = work / model
    out.mkdir(parents=True, exist_ok=True)
    data = TextData(train="lmforge:corpus/train.txt", val="lmforge:corpus/val.txt",
                    tokenizer=TokenizerSpec(train=TokenizerTraining(**MODELS[model]["tokenizer"])),
                    block_size=args.block_size, batch_size=args.batch_size, cache_dir=str(work / "cache"), seed=0)
    data.prepare_data()
    data.setup("fit")
    torch.save(data.datasets["train"].blocks.clone(), out / "blocks.pt")
    data.tokenizer.save_pretrained(out / "tokenizer")
    meta = {"vocab_size": len(data.tokenizer), "blocks": len(data.datasets["train"])}
    (out / "meta.json").write_text(json.dumps(meta))
    return meta


def recipe(work: Path, args: argparse.Namespace, name: str, bare: bool, plugins: bool = False,
           model: dict[str, int] | None = None, block_size: int | None = None, arch: str = "gpt2") -> Path:
    """The model's bundled recipe (quickstart, mlm-pretrain) shortened to ``--steps`` steps, with the runners'
    optimizer and schedule, the prepared tokenizer and the StepTimes callback."""
    import yaml

    from lmforge.cli.recipes import resolve_recipe

    spec = MODELS[arch]
    r = yaml.safe_load(Path(resolve_recipe(spec["recipe"])).read_text(encoding="utf-8"))
    block = block_size or args.block_size
    r["model"]["backbone"]["config"] = {**(model or spec["config"]), spec["positions"]: block}
    r["data"]["init_args"].update(block_size=block, batch_size=args.batch_size, cache_dir=str(work / "cache"),
                                  seed=0, tokenizer={"path": str(work / arch / "tokenizer")})
    r["optimizer"] = {"class_path": "torch.optim.AdamW",
                      "init_args": {"lr": LR, "weight_decay": WEIGHT_DECAY, "fused": True}}  # as the recipes
    r["lr_scheduler"] = {"class_path": "lmforge.core.schedules.WarmupCosineLR", "init_args": {"warmup_steps": WARMUP}}
    t = r["trainer"]
    t["max_steps"] = args.steps
    t["logger"]["init_args"]["save_dir"] = str(work / "runs")
    step_times = {"class_path": "perf_callback.StepTimes"}
    if bare:
        t.update(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                 limit_val_batches=0, num_sanity_val_steps=0, callbacks=[step_times])
        for key in ("val_check_interval", "check_val_every_n_epoch"):
            t.pop(key, None)
    else:
        t["callbacks"].append(step_times)
    if plugins:
        r["model"]["regularizers"] = [{"class_path": "L2Penalty", "init_args": {"weight": 1e-4}}]
        r["model"]["augmenters"] = [{"class_path": "TokenNoise", "init_args": {"replace_probability": 0.1}}]
        r["model"]["bias_mitigators"] = [{"class_path": "CounterfactualAugmentation"}]  # data stage: two-sided CDA
    path = work / f"{arch}-{name}.yaml"
    path.write_text(yaml.safe_dump(r, sort_keys=False), encoding="utf-8")
    return path


# -- runners ----------------------------------------------------------------------------------------

def run_child(cmd: list[str], result: Path, work: Path) -> dict[str, Any]:
    env = {**ENV, "LMFORGE_PERF_OUT": str(result), "LMFORGE_PERF_T0": repr(time.time())}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    record = json.loads(result.read_text(encoding="utf-8"))
    record["wall_s"] = wall
    return record


def steady(record: dict[str, Any], args: argparse.Namespace) -> dict[str, float]:
    """Tokens/s over the steps after the warm-up, and the share of time between steps (data wait)."""
    end, start = record["end"], record["start"]
    w = args.warmup
    span = end[-1] - end[w - 1]
    steps = len(end) - w
    out = {"tokens_per_s": steps * args.batch_size * args.block_size / span, "step_ms": 1000 * span / steps,
           "max_rss_mb": record["max_rss_mb"], "first_step_s": record["first_step_s"],
           "first_step_cpu_s": record.get("first_step_cpu_s", float("nan")),
           "first_step_rss_mb": record.get("first_step_rss_mb", float("nan"))}
    if start:  # wait = from a step's end to the next step's start (fetching the batch, and the loop's hooks)
        waits = [start[i] - end[i - 1] for i in range(w, len(end))]
        out["data_wait_share"] = sum(waits) / span
    return out


def build_model(args: argparse.Namespace, work: Path) -> Any:
    """The runner's model from its config (the same for every runner), and the prepared blocks."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

    blocks = torch.load(work / args.model / "blocks.pt")
    vocab = json.loads((work / args.model / "meta.json").read_text())["vocab_size"]
    if args.model == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=args.block_size, **MODEL)), blocks
    config = BertConfig(vocab_size=vocab, max_position_embeddings=args.block_size, **BERT)
    return BertForMaskedLM(config), blocks


def bert_mask(input_ids: Any, special: Any, mask_id: int, vocab: int, generator: Any) -> tuple[Any, Any]:
    """BERT's 15 % selection with 80/10/10 replacement, on the device, written the way a user of HF's
    DataCollatorForLanguageModeling would (lmforge's MaskedLM does the same on the device every step)."""
    import torch

    selected = (torch.rand(input_ids.shape, generator=generator) < MASK) & ~special
    labels = input_ids.masked_fill(~selected, -100)
    action = torch.rand(input_ids.shape, generator=generator)
    masked = torch.where(selected & (action < 0.8), mask_id, input_ids)
    random_ids = torch.randint(vocab, input_ids.shape, generator=generator)
    masked = torch.where(selected & (action >= 0.8) & (action < 0.9), random_ids, masked)
    return masked, labels


def worker_plain(args: argparse.Namespace, work: Path) -> None:
    """The hand-written loop: what a careful user writes without a framework."""
    import resource

    import torch
    from torch.utils.data import DataLoader

    from lmforge.core.schedules import WarmupCosineLR
    from lmforge.core.data.tokenizer import load_tokenizer

    torch.set_num_threads(1)
    torch.manual_seed(42)
    if args.worker == "plain-tuned":  # the same loop with lmforge's allocator settings (lmforge/runtime/allocator.py)
        from lmforge.runtime.allocator import tune_malloc

        tune_malloc()
    model, blocks = build_model(args, work)
    model.train()
    tokenizer = load_tokenizer(work / args.model / "tokenizer")
    special_ids = torch.tensor(tokenizer.all_special_ids)
    generator = torch.Generator().manual_seed(1)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2]},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=LR, weight_decay=WEIGHT_DECAY, fused=True)
    sched = WarmupCosineLR(opt, warmup_steps=WARMUP, total_steps=max(args.steps, WARMUP + 1))
    loader = DataLoader(blocks, batch_size=args.batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(0))
    start, end, first = [], [], None
    it = iter(loader)
    for step in range(args.steps):
        if first is None:
            first = time.time()
            usage = resource.getrusage(resource.RUSAGE_SELF)
            first_cpu, first_rss = usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024
        start.append(time.perf_counter())
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        input_ids = batch.long()
        if args.model == "gpt2":
            loss = model(input_ids=input_ids, labels=input_ids).loss
        else:
            masked, labels = bert_mask(input_ids, torch.isin(input_ids, special_ids), tokenizer.mask_token_id,
                                       len(tokenizer), generator)
            loss = model(input_ids=masked, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        end.append(time.perf_counter())
    # the plain loop's "start" is before the batch fetch, so its wait share is not comparable: left out
    write(args.result, {"start": [], "end": end, "first_step_s": first - float(os.environ["LMFORGE_PERF_T0"]),
                        "first_step_cpu_s": first_cpu, "first_step_rss_mb": first_rss,
                        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def worker_hf(args: argparse.Namespace, work: Path) -> None:
    """transformers.Trainer on the same model, data, optimizer groups, schedule and clipping."""
    import resource

    import torch
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainingArguments

    from lmforge.core.data.tokenizer import load_tokenizer

    torch.set_num_threads(1)
    torch.manual_seed(42)
    model, blocks = build_model(args, work)
    tokenizer = load_tokenizer(work / args.model / "tokenizer")
    # GPT-2: labels are the inputs (the model shifts them). BERT: HF's collator masks each batch on the CPU.
    collator = None if args.model == "gpt2" else DataCollatorForLanguageModeling(tokenizer, mlm_probability=MASK)

    class Blocks(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(blocks)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            ids = blocks[i].long()
            return {"input_ids": ids, "labels": ids} if collator is None else {"input_ids": ids}

    times: dict[str, Any] = {"start": [], "end": [], "first": None}

    class StepTimes(TrainerCallback):
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            if times["first"] is None:
                times["first"] = time.time()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            times["end"].append(time.perf_counter())

    # HF's default optimizer groups: no decay on biases and LayerNorm weights (= lmforge's 1-D rule for GPT-2).
    targs = TrainingArguments(
        output_dir=str(work / "hf-out"), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        learning_rate=LR, weight_decay=WEIGHT_DECAY, max_grad_norm=CLIP, warmup_steps=WARMUP,
        lr_scheduler_type="cosine", optim="adamw_torch", report_to="none", logging_steps=10_000,
        save_strategy="no", eval_strategy="no", dataloader_num_workers=0, disable_tqdm=True, seed=42,
        use_cpu=True,
    )
    Trainer(model=model, args=targs, train_dataset=Blocks(), data_collator=collator, callbacks=[StepTimes()]).train()
    write(args.result, {"start": [], "end": times["end"],
                        "first_step_s": times["first"] - float(os.environ["LMFORGE_PERF_T0"]),
                        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def worker_data(args: argparse.Namespace, work: Path) -> None:
    """TextData tokenize + pack (fresh cache, a given tokenizer) vs the fast tokenizer called directly."""
    import numpy as np
    import torch

    from lmforge.core.data.text import TextData
    from lmforge.core.data.files import resolve_files
    from lmforge.core.data.tokenizer import TokenizerSpec, load_tokenizer

    torch.set_num_threads(1)
    text_path = resolve_files(["lmforge:corpus/train.txt"], "data.train")[0]
    nbytes = Path(text_path).stat().st_size
    out: dict[str, Any] = {"bytes": nbytes}
    tok = load_tokenizer(work / "gpt2" / "tokenizer")
    for _ in range(3):
        with tempfile.TemporaryDirectory() as cache:
            t0 = time.perf_counter()
            data = TextData(train=str(text_path), val=None, tokenizer=TokenizerSpec(path=str(work / "gpt2" / "tokenizer")),
                            block_size=args.block_size, batch_size=args.batch_size, cache_dir=cache, seed=0)
            data.prepare_data()
            data.setup("fit")
            t_lmforge = time.perf_counter() - t0
        t0 = time.perf_counter()
        lines = [line for line in Path(text_path).read_text(encoding="utf-8").splitlines() if line.strip()]
        ids = tok(lines, add_special_tokens=False)["input_ids"]
        flat = np.fromiter((i for doc in ids for i in doc), dtype=np.int32)
        blocks = flat[: len(flat) // args.block_size * args.block_size].reshape(-1, args.block_size)
        t_direct = time.perf_counter() - t0
        out.setdefault("textdata_s", []).append(t_lmforge)
        out.setdefault("direct_s", []).append(t_direct)
        out["tokens"] = int(blocks.size)
    write(args.result, out)


def write(path: str, record: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(record), encoding="utf-8")


# -- sections (parent) ------------------------------------------------------------------------------

def throughput(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    return {arch: throughput_of(arch, work, args) for arch in args.models.split(",")}


def throughput_of(arch: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    print(f" {arch}", flush=True)
    me = [sys.executable, str(Path(__file__).resolve()), "--steps", str(args.steps), "--block-size",
          str(args.block_size), "--batch-size", str(args.batch_size), "--work-dir", str(work), "--model", arch]
    runners = {
        "plain": me + ["--worker", "plain"],
        "plain-tuned": me + ["--worker", "plain-tuned"],
        "lmforge": LMFORGE + ["fit", "--config", str(recipe(work, args, "recipe", bare=False, arch=arch))],
        "lmforge-bare": LMFORGE + ["fit", "--config", str(recipe(work, args, "bare", bare=True, arch=arch))],
        "hf": me + ["--worker", "hf"],
        "lmforge+plugins": LMFORGE + ["fit", "--config", str(recipe(work, args, "plugins", bare=True, plugins=True,
                                                                     arch=arch))],
    }
    if args.runners:
        unknown = set(args.runners.split(",")) - set(runners)
        if unknown:
            raise SystemExit(f"perf.py: unknown --runners {sorted(unknown)}; choose from {list(runners)}")
        runners = {k: v for k, v in runners.items() if k in args.runners.split(",")}
    rounds: list[dict[str, dict[str, float]]] = []
    for rnd in range(args.rounds):
        order = list(runners) if rnd % 2 == 0 else list(reversed(runners))  # no runner always goes first
        row = {}
        for name in order:
            result = work / f"{name}.json"
            cmd = runners[name] + (["--result", str(result)] if name in ("plain", "plain-tuned", "hf") else [])
            row[name] = steady(run_child(cmd, result, work), args)
            print(f"  round {rnd + 1}/{args.rounds} {name:<16} {row[name]['tokens_per_s']:8.0f} tokens/s", flush=True)
        rounds.append(row)
    pairs = {"lmforge-bare/plain": ("lmforge-bare", "plain"), "lmforge/plain": ("lmforge", "plain"),
             "lmforge-bare/plain-tuned": ("lmforge-bare", "plain-tuned"),
             "lmforge-bare/hf": ("lmforge-bare", "hf"), "lmforge/hf": ("lmforge", "hf"),
             "plugins/bare": ("lmforge+plugins", "lmforge-bare")}
    ratios = {k: [r[a]["tokens_per_s"] / r[b]["tokens_per_s"] for r in rounds]
              for k, (a, b) in pairs.items() if a in runners and b in runners}
    # Start-up: command to the first training step (wall and CPU seconds), and peak RSS, against the plain loop.
    for a in ("lmforge", "lmforge-bare"):
        if a in runners and "plain" in runners:
            for key, label in (("first_step_s", "first step"), ("first_step_cpu_s", "first step cpu"),
                               ("max_rss_mb", "peak RSS")):
                ratios[f"{label} {a}/plain"] = [r[a][key] / r["plain"][key] for r in rounds]
    return {"rounds": rounds, "ratios": {k: summary(v) for k, v in ratios.items()}}


def startup(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmds = {"lmforge --help": LMFORGE + ["--help"], "lmforge plugins": LMFORGE + ["plugins"],
            "python -c 'import torch'": [sys.executable, "-c", "import torch"]}
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(max(3, args.rounds)):
        for name, cmd in cmds.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, env=ENV, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            times[name].append(time.perf_counter() - t0)
    return {k: summary(v) for k, v in times.items()}


def data_section(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    result = work / "data.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "data", "--work-dir", str(work),
           "--block-size", str(args.block_size), "--result", str(result)]
    subprocess.run(cmd, env=ENV, cwd=work, check=True, stdout=subprocess.DEVNULL)
    r = json.loads(result.read_text())
    out = {}
    for key in ("textdata_s", "direct_s"):
        s = statistics.median(r[key])
        out[key.removesuffix("_s")] = {"s": s, "MB_per_s": r["bytes"] / s / 1e6, "tokens_per_s": r["tokens"] / s}
    return out


def scaling(work: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for width, depth in ((64, 1), (128, 2), (256, 4), (512, 8)):
        model = {"n_layer": depth, "n_embd": width, "n_head": 4}
        path = recipe(work, args, f"scale-{width}x{depth}", bare=True, model=model)
        result = work / "scale.json"
        rec = steady(run_child(LMFORGE + ["fit", "--config", str(path)], result, work), args)
        rows.append({"width": width, "depth": depth, "block_size": args.block_size, **rec})
        print(f"  {width}x{depth}: {rec['tokens_per_s']:.0f} tokens/s, {rec['max_rss_mb']:.0f} MB", flush=True)
    for block in (64, 256, 512):
        path = recipe(work, args, f"block-{block}", bare=True, block_size=block)
        result = work / "scale.json"
        rec = steady(run_child(LMFORGE + ["fit", "--config", str(path)], result, work),
                     argparse.Namespace(**{**vars(args), "block_size": block}))
        rows.append({"width": MODEL["n_embd"], "depth": MODEL["n_layer"], "block_size": block, **rec})
        print(f"  block {block}: {rec['tokens_per_s']:.0f} tokens/s, {rec['max_rss_mb']:.0f} MB", flush=True)
    return rows


def overhead(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The fixed cost around the step: benchmarks/gpu_gpt2_125m.py --dry-run (GPT-2 2x64, batches of 2 x 64
    tokens on the CPU, fused AdamW in both runners), lmforge against the plain loop, alternating rounds."""
    out = work / "overhead.json"
    cmd = [sys.executable, str(HERE / "gpu_gpt2_125m.py"), "--dry-run", "--runners", "plain,lmforge", "--rounds",
           str(args.rounds), "--steps", str(args.steps), "--warmup", str(args.warmup), "--out", str(out)]
    subprocess.run(cmd, env=ENV, cwd=work, check=True, stdout=subprocess.DEVNULL)
    rounds = json.loads(out.read_text())["rounds"]["off"]
    return {"lmforge/plain": summary([r["lmforge"]["tokens_per_s"] / r["plain"]["tokens_per_s"] for r in rounds])}


def distill(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    import perf_distill

    return perf_distill.section(work, args, ENV)


def tokenize(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    import perf_tokenize

    return perf_tokenize.section(work, args, ENV)


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def report(results: dict[str, Any]) -> None:
    for arch, th in results.get("throughput", {}).items():
        model = {"gpt2": "GPT-2 2x128, causal LM", "bert": "BERT 2x128, masked LM"}[arch]
        print(f"\nTraining throughput ({model}, batch {results['args']['batch_size']} x "
              f"{results['args']['block_size']} tokens, 1 torch thread), medians over rounds:")
        print(f"  {'runner':<16} {'tokens/s':>9} {'step ms':>8} {'data wait':>9} {'first step s':>12} {'peak RSS MB':>11}")
        for name in th["rounds"][0]:
            col = {k: statistics.median(r[name].get(k, float("nan")) for r in th["rounds"])
                   for k in ("tokens_per_s", "step_ms", "data_wait_share", "first_step_s", "max_rss_mb")}
            wait = "-" if col["data_wait_share"] != col["data_wait_share"] else f"{100 * col['data_wait_share']:.2f}%"
            print(f"  {name:<16} {col['tokens_per_s']:9.0f} {col['step_ms']:8.1f} {wait:>9} "
                  f"{col['first_step_s']:12.1f} {col['max_rss_mb']:11.0f}")
        print("  ratio (median of per-round ratios [min, max]):")
        for k, v in th["ratios"].items():
            print(f"    {k:<20} {v['median']:.3f} [{v['min']:.3f}, {v['max']:.3f}]")
    if "startup" in results:
        print("\nStartup (s, median [min, max]):")
        for k, v in results["startup"].items():
            print(f"  {k:<26} {v['median']:.2f} [{v['min']:.2f}, {v['max']:.2f}]")
    if "data" in results:
        print("\nTokenize + pack the bundled train split:")
        for k, v in results["data"].items():
            print(f"  {k:<9} {v['s']:.2f} s  {v['MB_per_s']:.2f} MB/s  {v['tokens_per_s']:.0f} tokens/s")
    if "overhead" in results:
        v = results["overhead"]["lmforge/plain"]
        print(f"\nStep overhead (GPT-2 2x64, 2 x 64 tokens a step): lmforge/plain {v['median']:.3f} "
              f"[{v['min']:.3f}, {v['max']:.3f}]")
    if "distill" in results:
        import perf_distill

        perf_distill.report(results["distill"])
    if "tokenize" in results:
        import perf_tokenize

        perf_tokenize.report(results["tokenize"])
    if "scaling" in results:
        print("\nScaling (lmforge bare):")
        print(f"  {'width':>5} {'depth':>5} {'block':>5} {'tokens/s':>9} {'peak RSS MB':>11}")
        for r in results["scaling"]:
            print(f"  {r['width']:5d} {r['depth']:5d} {r['block_size']:5d} {r['tokens_per_s']:9.0f} {r['max_rss_mb']:11.0f}")


def main() -> None:
    args = parse_args()
    if args.warmup < 1 or args.steps <= args.warmup + 1:
        raise SystemExit(f"perf.py: --steps must exceed --warmup + 1 and --warmup must be >= 1, "
                         f"got --steps {args.steps} --warmup {args.warmup}.")
    if args.worker:
        {"plain": worker_plain, "plain-tuned": worker_plain, "hf": worker_hf, "data": worker_data}[args.worker](args, Path(args.work_dir))
        return
    sections = set(args.only.split(",")) if args.only else {"throughput", "startup", "data"}
    if args.scaling:
        sections.add("scaling")
    unknown = set(args.models.split(",")) - set(MODELS)
    if unknown:
        raise SystemExit(f"perf.py: unknown --models {sorted(unknown)}; choose from {list(MODELS)}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        models = set(args.models.split(",")) | {"gpt2"}  # the data and scaling sections use GPT-2's tokenizer
        meta = {arch: prepare(work, args, arch) for arch in sorted(models)}
        results: dict[str, Any] = {"machine": machine(), "args": vars(args), "data_meta": meta}
        for name, fn in (("startup", startup), ("data", data_section), ("throughput", throughput),
                         ("scaling", scaling), ("overhead", overhead), ("distill", distill), ("tokenize", tokenize)):
            if name in sections:
                print(f"[{name}]", flush=True)
                results[name] = fn(work, args)
        Path(args.out).write_text(json.dumps(results, indent=1), encoding="utf-8")
    report(results)
    print(f"\nwrote {args.out}")


def machine() -> dict[str, Any]:
    import platform

    import torch

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "load_avg": os.getloadavg(), "torch_threads": 1}


if __name__ == "__main__":
    main()
