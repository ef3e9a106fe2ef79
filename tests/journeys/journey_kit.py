"""Journeys: the real ``lmforge`` command, run in a subprocess from a fresh working directory, as users run it.

Each journey runs the bundled recipes with their own loggers, callbacks and progress bar, shortened only by
command-line overrides (`short_args`), then does what a user does next with the result. A journey sees what a
user sees: the exit code, the console, the files a run writes (metrics.csv, checkpoints read with
``torch.load(weights_only=True)``, exported directories) and public ``transformers``/``torch`` APIs. It imports
nothing from lmforge.

The runner starts each command in a new session. Past its time limit it kills the whole process tree (a hung
collective under DDP included) and fails the test with the command and the tail of its output, so a hang
fails within the limit instead of stopping CI.

``probe/journey_probe.py`` is a test-only Lightning callback that a journey adds with
``--trainer.callbacks+=journey_probe.JourneyProbe`` (`PROBE`); it records each rank's module modes at the
first training batch, its last loss and a digest of its full weights.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent
LMFORGE = str(BIN / "lmforge")
TORCHRUN = str(BIN / "torchrun")
PROBE_PATH = Path(__file__).parent / "probe"
PROBE = "--trainer.callbacks+=journey_probe.JourneyProbe"

#: Time limits (seconds). A healthy shortened run takes 5-20 s alone and 15-30 s as two processes on 2 cores.
SINGLE_LIMIT = 180
DISTRIBUTED_LIMIT = 150  # hangs are caught sooner by the stall check (`STALL`)
QUICK_LIMIT = 60  # a command that fails before training, or a tool (export, predict)
#: A distributed run whose processes together use less than STALL_CPU seconds of CPU in STALL seconds is hung:
#: ranks that wait in a collective that never completes use about 0.05 s a second, a run that trains (even
#: on 2 cores shared with 5 other busy processes) more than 0.5 s a second.
STALL, STALL_CPU = 20.0, 3.0

#: Sizes far below every recipe's, so each run takes seconds.
GPT2_SMALL = "{n_layer: 1, n_embd: 32, n_head: 2, n_positions: 64}"
GPT2_TEACHER = "{n_layer: 3, n_embd: 32, n_head: 2, n_positions: 64}"  # distill-clm keeps blocks 0 and 2
BERT_SMALL = ("{num_hidden_layers: 1, hidden_size: 32, num_attention_heads: 2, intermediate_size: 64, "
              "max_position_embeddings: 64}")
BERT_TEACHER = ("{num_hidden_layers: 3, hidden_size: 32, num_attention_heads: 2, intermediate_size: 64, "
                "max_position_embeddings: 64}")

#: Every run: a few steps, two validations of at most two batches.
STEPS = ["--trainer.max_steps", "6", "--trainer.val_check_interval", "3", "--trainer.limit_val_batches", "2",
         "--trainer.log_every_n_steps", "2"]
WARMUP = ["--lr_scheduler.init_args.warmup_steps", "2"]  # recipes with WarmupCosineLR: warm up within the run
LM_DATA = ["--data.init_args.block_size", "32", "--data.init_args.tokenizer.train.vocab_size", "500"]
LABELED_DATA = ["--data.init_args.max_length", "32", "--data.init_args.batch_size", "16",
                "--data.init_args.tokenizer.train.vocab_size", "500"]

#: Per recipe: the overrides that shorten it (sizes, data), on top of `STEPS`. Data and tokenizer settings are
#: kept where a starting point gives its own (`short_args(..., own_model=True)` drops the model sizes).
RECIPE_ARGS: dict[str, dict[str, list[str]]] = {
    "quickstart": {"model": ["--model.backbone.config", GPT2_SMALL], "data": [*LM_DATA, *WARMUP]},
    "clm-pretrain": {"model": ["--model.backbone.config", GPT2_TEACHER], "data": [*LM_DATA, *WARMUP]},
    "regularized-clm": {"model": ["--model.backbone.config", GPT2_SMALL], "data": [*LM_DATA, *WARMUP]},
    "debias-clm": {"model": ["--model.backbone.config", GPT2_SMALL],
                   "data": ["--data.init_args.block_size", "32", "--data.init_args.tokenizer.train.vocab_size", "400"]},
    "distill-clm": {"model": [], "data": ["--data.init_args.block_size", "32", *WARMUP]},
    "mlm-pretrain": {"model": ["--model.backbone.config", BERT_TEACHER], "data": [*LM_DATA, *WARMUP]},
    "debias-mlm": {"model": ["--model.backbone.config", BERT_SMALL],  # one validation: its bias probe is slow
                   "data": ["--data.init_args.block_size", "32", "--data.init_args.tokenizer.train.vocab_size", "400",
                            "--trainer.val_check_interval", "6"]},
    "distill-mlm": {"model": [], "data": ["--data.init_args.block_size", "32", *WARMUP]},
    "finetune-sentiment": {"model": ["--model.backbone.config", BERT_SMALL], "data": [*LABELED_DATA, *WARMUP]},
    "finetune-ner": {"model": ["--model.backbone.config", BERT_SMALL], "data": [*LABELED_DATA, *WARMUP]},
}
#: Recipes that start from a model another run made, each with the journey that fits it.
COVERED_ELSEWHERE = {"sft-lora": "test_sft.py"}
#: A distillation recipe reads its teacher from this recipe's run in the same working directory.
TEACHERS = {"distill-clm": "clm-pretrain", "distill-mlm": "mlm-pretrain"}
#: The metric each recipe's checkpoint callback monitors.
MONITORED = {"finetune-sentiment": "val/macro_f1", "finetune-ner": "val/entity_f1"}


def short_args(recipe: str, own_model: bool = False, own_tokenizer: bool = False) -> list[str]:
    """The overrides that shorten ``recipe`` to a few seconds.

    Args:
        own_model: The run starts from a given model (``pretrained``/``checkpoint``): no model sizes.
        own_tokenizer: The run is given a tokenizer: no tokenizer training settings.
    """
    args = RECIPE_ARGS[recipe]
    data = list(args["data"])
    if own_tokenizer and "--data.init_args.tokenizer.train.vocab_size" in data:
        i = data.index("--data.init_args.tokenizer.train.vocab_size")
        del data[i:i + 2]
    return [*STEPS, *([] if own_model else args["model"]), *data]


# -- running commands -----------------------------------------------------------------------------------------


@dataclass
class Result:
    """A finished command: what a user sees of it."""

    cmd: list[str]
    cwd: Path
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    probe_dir: Path

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def command_line(self) -> str:
        return f"(cd {self.cwd} && {shlex.join(self.cmd)})"

    def tail(self, lines: int = 60) -> str:
        return ("--- stdout (tail) ---\n" + "\n".join(self.stdout.splitlines()[-lines // 2:])
                + "\n--- stderr (tail) ---\n" + "\n".join(self.stderr.splitlines()[-lines:]))

    def explain(self, what: str) -> str:
        return f"{what}\ncommand: {self.command_line()}\nexit code {self.returncode} after {self.seconds:.0f}s\n" \
               f"{self.tail()}"

    def expect_ok(self) -> Result:
        """Fail the test, with the command and its output, unless the command exited 0."""
        if self.returncode != 0:
            pytest.fail(self.explain("the command failed"), pytrace=False)
        return self

    def probe(self, stage: str, rank: int = 0) -> dict[str, Any]:
        """What `JourneyProbe` wrote on ``rank`` at ``stage`` (``start`` or ``end``)."""
        path = self.probe_dir / f"{stage}-rank{rank}.json"
        if not path.is_file():
            pytest.fail(self.explain(f"the run wrote no probe record {path.name}"), pytrace=False)
        return json.loads(path.read_text(encoding="utf-8"))


def _process_table() -> dict[int, tuple[int, float]]:
    """``pid -> (parent pid, CPU seconds used)`` of every process (Linux /proc; empty elsewhere)."""
    table = {}
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(stat.parent.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)
    return table


def _tree(pid: int, table: dict[int, tuple[int, float]]) -> list[int]:
    """``pid`` and every process below it; workers that torchrun starts in their own sessions included."""
    children: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    found, todo = [pid], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc``, its process group and every process below it."""
    for pid in _tree(proc.pid, _process_table())[1:]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


@dataclass
class Started:
    """A command running in the background (`Journeys.start`)."""

    proc: subprocess.Popen
    cmd: list[str]
    cwd: Path
    stdout_path: Path
    stderr_path: Path
    probe_dir: Path
    started: float = field(default_factory=time.monotonic)

    def result(self) -> Result:
        return Result(self.cmd, self.cwd, self.proc.returncode, self.stdout_path.read_text(errors="replace"),
                      self.stderr_path.read_text(errors="replace"), time.monotonic() - self.started, self.probe_dir)

    def wait(self, limit: float, stall: float | None = None) -> Result:
        """The finished command. Past ``limit`` seconds, or when its processes together have used less than
        `STALL_CPU` seconds of CPU in the last ``stall`` seconds (ranks waiting in a collective that never
        completes use almost none), kill its process tree and fail the test. The stall check reads /proc: it is
        off where there is none."""
        if not Path("/proc").is_dir():
            stall = None
        cpu: dict[int, float] = {}
        progress: list[tuple[float, float]] = []  # (time, CPU seconds used since the previous look)
        while True:
            elapsed = time.monotonic() - self.started
            try:
                self.proc.wait(timeout=min(1.0, max(0.01, limit - elapsed)))
                return self.result()
            except subprocess.TimeoutExpired:
                pass
            elapsed = time.monotonic() - self.started
            if elapsed >= limit:
                self._fail(f"timed out after {limit:.0f}s (a hung collective?); killed its processes")
            if stall is None:
                continue
            table = _process_table()
            now = {pid: table[pid][1] for pid in _tree(self.proc.pid, table) if pid in table}
            progress.append((elapsed, sum(max(0.0, used - cpu.get(pid, 0.0)) for pid, used in now.items())))
            cpu = now
            progress = [(at, used) for at, used in progress if at > elapsed - stall]
            recent = sum(used for _, used in progress)
            if elapsed > stall + 5 and recent < STALL_CPU:
                self._fail(f"stalled: its processes used {recent:.2f}s of CPU in the last {stall:.0f}s "
                           f"(a hung collective?); killed them after {elapsed:.0f}s")

    def _fail(self, why: str) -> None:
        kill_tree(self.proc)
        pytest.fail(self.result().explain(why), pytrace=False)

    def kill(self) -> None:
        if self.proc.poll() is None:
            kill_tree(self.proc)


class Journeys:
    """Starts commands as a user would, in a clean environment shared by the session."""

    def __init__(self, cache_dir: Path, log_dir: Path) -> None:
        self.cache_dir = cache_dir
        self.log_dir = log_dir
        self._ids = itertools.count()

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        # Settings of the unit suite's conftest and of the developer's shell that users do not have.
        for key in ("PYTHONWARNINGS", "TOKENIZERS_PARALLELISM", "LMFORGE_DEBUG", "JOURNEY_STEP_SLEEP",
                    "PYTEST_CURRENT_TEST", "PYTEST_VERSION"):
            env.pop(key, None)
        env.update(HF_HUB_OFFLINE="1", WANDB_MODE="offline", LMFORGE_CACHE=str(self.cache_dir))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROBE_PATH), os.environ.get("PYTHONPATH", "")) if p)
        env.update(extra or {})
        return env

    def start(self, cmd: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> Started:
        n = next(self._ids)
        cwd.mkdir(parents=True, exist_ok=True)
        probe_dir = self.log_dir / f"{n:03d}-probe"
        out, err = self.log_dir / f"{n:03d}.stdout", self.log_dir / f"{n:03d}.stderr"
        (self.log_dir / f"{n:03d}.cmd").write_text(f"cd {cwd} && {shlex.join(cmd)}\n")
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            proc = subprocess.Popen(list(cmd), cwd=cwd, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                                    env=self.env({"JOURNEY_PROBE_DIR": str(probe_dir), **(env or {})}),
                                    start_new_session=True)
        return Started(proc, list(cmd), cwd, out, err, probe_dir)

    def lmforge(self, args: Sequence[str], cwd: Path, limit: float = SINGLE_LIMIT,
                env: dict[str, str] | None = None, stall: float | None = None) -> Result:
        """Run ``lmforge ARGS`` in ``cwd`` and return its result, whatever its exit code (see `Started.wait`)."""
        started = self.start([LMFORGE, *args], cwd, env)
        try:
            return started.wait(limit, stall)
        finally:
            started.kill()


# -- what runs write ------------------------------------------------------------------------------------------


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    """The rows of ``run_dir/metrics.csv`` (CSVLogger)."""
    with open(run_dir / "metrics.csv", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def metric_values(rows: list[dict[str, str]], key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of every row that logged ``key``."""
    return [(int(float(r["step"])), float(r[key])) for r in rows if r.get(key) not in (None, "")]


def last_metric(run_dir: Path, key: str) -> float:
    values = metric_values(read_metrics(run_dir), key)
    assert values, f"{run_dir}/metrics.csv has no {key}"
    return values[-1][1]


def console_metric(output: str, key: str) -> float:
    """A metric from the table that ``lmforge validate``/``test`` print (``│ val/loss │ 6.21 │``)."""
    found = re.findall(rf"{re.escape(key)}\s*[│|]\s*([-+0-9.eE]+|nan|inf)", output)
    assert found, f"the console shows no {key}"
    return float(found[-1])


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def versions(recipe_dir: Path) -> list[str]:
    """The ``version_N`` run directories under ``runs/<recipe>``, in order."""
    if not recipe_dir.is_dir():
        return []
    return sorted((p.name for p in recipe_dir.glob("version_*")), key=lambda name: int(name.split("_")[1]))


def load_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


# -- shared runs ----------------------------------------------------------------------------------------------


@dataclass
class RecipeRun:
    """A recipe fitted single-process from scratch in its own working directory."""

    recipe: str
    workdir: Path
    result: Result

    @property
    def run_dir(self) -> Path:
        return self.workdir / "runs" / self.recipe / "version_0"

    @property
    def last_ckpt(self) -> Path:
        return self.run_dir / "checkpoints" / "last.ckpt"

    def best_ckpt(self) -> Path:
        found = sorted((self.run_dir / "checkpoints").glob("best-*.ckpt"))
        assert found, self.result.explain(f"no best checkpoint in {self.run_dir}/checkpoints")
        return found[-1]


# -- local Hugging Face models, as a user downloads them beforehand ------------------------------------------


def bundled_text(name: str) -> list[str]:
    """Lines of a corpus shipped with lmforge (the file a recipe names ``lmforge:NAME``)."""
    from importlib.resources import files

    return [line for line in files("lmforge").joinpath("data", *name.split("/")).read_text("utf-8").splitlines()
            if line.strip()]


def bundled_jsonl(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in bundled_text(name)]


