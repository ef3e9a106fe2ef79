"""Knowledge distillation at tiny scale: a teacher against half-depth students
trained with and without distillation.

Trains a GPT-2 teacher on lmforge's bundled corpus, saves it as an lmforge
checkpoint, then trains students with half its blocks, each for the same number
of steps (fewer than the teacher's), on the same batches, from the same seed:

  student            random init, next-token loss only
  student+KD         random init, plus LogitDistillation from the teacher
  student(init)      init from teacher blocks 0, 2, ... (DistilBERT), next-token loss only
  student(init)+KD   init from the teacher plus LogitDistillation (DistilBERT's recipe)

and reports, for each model, validation perplexity on the bundled val split,
parameter count and inference tokens/s (forward only, eval mode), and the
training step times: a distillation step against a plain student step and
against the teacher's forward pass alone. Timings alternate between the
contenders round by round (A/B) and the ratios quoted are medians of per-round
ratios, because the CPUs here are shared and noisy.

    python benchmarks/distillation.py                 # 12-15 min on 2 busy shared cores (5.5 CPU-minutes)
    python benchmarks/distillation.py --teacher-steps 2000 --steps 800
    python benchmarks/distillation.py --skip-init --top-k 32   # plus a student from the teacher's cached top 32
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch import Trainer, seed_everything  # noqa: E402

from lmforge.core.backbone import Backbone  # noqa: E402
from lmforge.core.data.text import TextData  # noqa: E402
from lmforge.core.module import LanguageModel  # noqa: E402
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining  # noqa: E402
from lmforge.plugins.distillation.logit_distillation import LogitDistillation  # noqa: E402
from lmforge.plugins.objectives.causal_lm import CausalLM  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher-steps", type=int, default=1000, help="training steps of the teacher")
    parser.add_argument("--steps", type=int, default=400, help="training steps of each student")
    parser.add_argument("--teacher-layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--vocab-size", type=int, default=2000)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=1.0, help="weight of the distillation term")
    parser.add_argument("--hard-loss-weight", type=float, default=1.0, help="weight of the next-token loss")
    parser.add_argument("--rounds", type=int, default=30, help="A/B timing rounds")
    # One thread by default: on shared CPUs, OpenMP threads that oversubscribe the cores spin and
    # run several times slower (a 4-block forward took 470 ms with 2 threads vs 92 ms with 1 here).
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--skip-init", action="store_true", help="leave out the students initialised from the teacher")
    parser.add_argument("--top-k", type=int, default=0, help="also train a student+KD top-k from the teacher's cached "
                        "top k logits (LogitDistillation teacher_top_k); 0: not")
    return parser.parse_args()


def backbone(args: argparse.Namespace, layers: int) -> Backbone:
    return Backbone("gpt2", {"n_layer": layers, "n_embd": args.width, "n_head": 4, "n_positions": args.block_size})


def data(args: argparse.Namespace, cache: Path, tokenizer: TokenizerSpec) -> TextData:
    return TextData(train="lmforge:corpus/train.txt", val="lmforge:corpus/val.txt", tokenizer=tokenizer,
                    block_size=args.block_size, batch_size=args.batch_size, cache_dir=str(cache), seed=0)


def train(model: LanguageModel, datamodule: TextData, steps: int) -> tuple[Trainer, float, float]:
    """Fit for ``steps`` steps; return the trainer, the validation perplexity and the seconds spent."""
    seed_everything(0, verbose=False)
    trainer = Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                      num_sanity_val_steps=0, gradient_clip_val=1.0)
    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    seconds = time.perf_counter() - start
    evaluator = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (result,) = evaluator.validate(model, datamodule=datamodule, verbose=False)
    return trainer, result["val/perplexity"], seconds


def lm(args: argparse.Namespace, spec: Backbone, steps: int, distiller: LogitDistillation | None = None) -> LanguageModel:
    return LanguageModel(spec, CausalLM(), distiller=distiller,
                         optimizer={"class_path": "torch.optim.AdamW", "init_args": {"lr": args.lr, "weight_decay": 0.1}},
                         lr_scheduler={"class_path": "lmforge.core.schedules.WarmupCosineLR",
                                       "init_args": {"warmup_steps": max(1, steps // 10)}})


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def alternate(contenders: dict[str, Callable[[], object]], rounds: int, warmup: int = 3) -> dict[str, list[float]]:
    """Seconds per call of each contender; the order rotates every round so drift hits all alike."""
    names = list(contenders)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            start = time.perf_counter()
            contenders[name]()
            elapsed = time.perf_counter() - start
            if r >= warmup:
                times[name].append(elapsed)
    return times


def median_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def step_timer(model: LanguageModel, batch: dict[str, torch.Tensor]) -> Callable[[], None]:
    """One full training step outside Lightning's loop: prepare, forward, loss terms, backward, AdamW step."""
    model.train()
    model.trainer = None  # detached: self.log() becomes a no-op
    optimizer = torch.optim.AdamW(model.param_groups(), lr=1e-4)

    def step() -> None:
        loss = model.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main() -> None:
    args = parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    datasets.disable_progress_bars()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="lmforge-distill-"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; work dir {work}")
    student_layers = args.teacher_layers // 2

    teacher_data = data(args, work / "cache", TokenizerSpec(train=TokenizerTraining(algorithm="bpe",
                                                                                    vocab_size=args.vocab_size)))
    teacher = lm(args, backbone(args, args.teacher_layers), args.teacher_steps)
    trainer, teacher_ppl, teacher_s = train(teacher, teacher_data, args.teacher_steps)
    trainer.save_checkpoint(work / "teacher.ckpt")
    tokenizer_dir = work / "tokenizer"
    teacher_data.tokenizer.save_pretrained(str(tokenizer_dir))
    ckpt = str(work / "teacher.ckpt")
    print(f"teacher: {args.teacher_layers} blocks x {args.width}, {args.teacher_steps} steps in {teacher_s:.0f} s, "
          f"val perplexity {teacher_ppl:.2f}")

    def distiller(**kwargs: object) -> LogitDistillation:
        return LogitDistillation(ckpt, temperature=args.temperature, alpha=args.alpha,
                                 hard_loss_weight=args.hard_loss_weight, **kwargs)

    init = Backbone(init_from=ckpt, layers=list(range(0, args.teacher_layers, 2)))
    variants = {"student": (backbone(args, student_layers), None),
                "student+KD": (backbone(args, student_layers), distiller())}
    if args.top_k:
        variants["student+KD top-k"] = (backbone(args, student_layers),
                                        distiller(teacher_top_k=args.top_k, teacher_cache=str(work / "top-k")))
    if not args.skip_init:
        variants.update({"student(init)": (init, None), "student(init)+KD": (init, distiller())})
    results = {"teacher": (teacher, teacher_ppl, teacher_s)}
    for name, (spec, kd) in variants.items():
        model = lm(args, spec, args.steps, kd)
        _, ppl, seconds = train(model, data(args, work / "cache", TokenizerSpec(path=str(tokenizer_dir))), args.steps)
        results[name] = (model, ppl, seconds)
        print(f"{name}: {args.steps} steps in {seconds:.0f} s, val perplexity {ppl:.2f}")
        if kd is not None and kd._cache is not None:  # each row the teacher scored is stored once; the rest hit
            rows = args.steps * args.batch_size
            print(f"  top-k cache: {len(kd._cache)} rows scored by the teacher of {rows} ({rows - len(kd._cache)} hits)")

    # -- inference speed: forward only, eval mode, one batch, A/B alternating ------------------------------------
    batch = next(iter(teacher_data.val_dataloader()))
    tokens = batch["input_ids"].numel()

    def forward(model: LanguageModel) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                model.backbone(input_ids=batch["input_ids"])
        return run

    for model, _, _ in results.values():
        model.eval()
    speed = alternate({name: forward(model) for name, (model, _, _) in results.items()}, args.rounds)
    print(f"\n{'model':<18}{'blocks':>7}{'params':>11}{'val ppl':>10}{'tokens/s':>11}{'train s':>9}")
    for name, (model, ppl, seconds) in results.items():
        blocks = model.backbone.config.num_hidden_layers
        print(f"{name:<18}{blocks:>7}{n_params(model.backbone):>11,}{ppl:>10.2f}"
              f"{tokens / statistics.median(speed[name]):>11,.0f}{seconds:>9.0f}")
    teacher_params = n_params(teacher.backbone)
    student_params = n_params(results["student"][0].backbone)
    print(f"\nstudents vs teacher: {100 * (1 - student_params / teacher_params):.0f} % fewer parameters, "
          f"{median_ratio(speed['teacher'], speed['student']):.2f}x its inference speed (median of per-round ratios)")
    for plain, kd in [("student", "student+KD"), ("student", "student+KD top-k"), ("student(init)", "student(init)+KD")]:
        if plain in results and kd in results:
            p_plain, p_kd = results[plain][1], results[kd][1]
            if p_plain > teacher_ppl:
                verdict = f"KD closes {100 * (p_plain - p_kd) / (p_plain - teacher_ppl):.0f} % of the gap to the teacher"
            else:
                verdict = "the student beats the teacher without KD; KD pulls it toward the teacher"
            print(f"{kd}: val perplexity {p_kd:.2f} vs {p_plain:.2f} without KD and {teacher_ppl:.2f} for the teacher "
                  f"({verdict})")

    # -- step time: distillation step vs plain student step vs teacher forward alone -----------------------------
    train_batch = next(iter(teacher_data.train_dataloader()))
    plain_model, kd_model = results["student"][0], results["student+KD"][0]
    teacher_forward = kd_model.distiller._teacher
    inputs = {"input_ids": train_batch["input_ids"]}
    steps = alternate({"plain step": step_timer(plain_model, train_batch),
                       "KD step": step_timer(kd_model, train_batch),
                       "teacher forward": lambda: teacher_forward(inputs)}, args.rounds)
    print(f"\nstep times over {args.rounds} alternating rounds (median ms): "
          + ", ".join(f"{n} {1000 * statistics.median(t):.1f}" for n, t in steps.items()))
    print(f"KD step / plain student step: {median_ratio(steps['KD step'], steps['plain step']):.2f} (median of ratios); "
          f"teacher forward / plain student step: {median_ratio(steps['teacher forward'], steps['plain step']):.2f}; "
          f"(KD step - plain step) / teacher forward: "
          f"{statistics.median((k - p) / t for k, p, t in zip(steps['KD step'], steps['plain step'], steps['teacher forward'])):.2f}")


if __name__ == "__main__":
    main()
