"""perf.py's ``tokenize`` section: TextData's tokenize + pack against the tokenizer's own ``encode_batch``.

Text is generated once per size (``--tokenize-mb``, default 10 and 100 MB; 1000 for 1 GB): lines of 20 to
400 words drawn with a fixed seed from the bundled corpus's words, one document per line. Contenders, each
in a fresh process per round, alternating round by round, on the same file and perf.py's prepared GPT-2
tokenizer (BPE 4k):

  textdata      TextData(train=<file>) prepare_data + setup("fit") on an empty cache: read, tokenize,
                pack into blocks of 128 (what a run does before its first step)
  encode_batch  tokenizers.Tokenizer.encode_batch over the file's non-empty lines, 10,000 at a time, with
                the library's own thread pool (TOKENIZERS_PARALLELISM=true), the ids of each encoding read

Reported per size: wall seconds after the imports, MB/s, CPU seconds (all processes), peak RSS (the process's VmHWM, or
the largest process it started and waited for, from getrusage), the peak of the process's anonymous memory
(``RssAnon``, sampled: peak RSS also counts the pages of the memory-mapped caches read, which grow with the
corpus and which the kernel can drop), and textdata/encode_batch throughput as
the median of per-round ratios. TOKENIZERS_PARALLELISM is left unset for textdata, as a user's shell has it.

    python benchmarks/perf.py --only tokenize --rounds 3                       # 10 and 100 MB
    python benchmarks/perf.py --only tokenize --rounds 1 --tokenize-mb 1000    # 1 GB (several minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BLOCK_SIZE = 128


def corpus(work: Path, mb: int) -> Path:
    """``work/tokenize/text-<mb>mb.txt``: generated once, from the bundled corpus's words, seed 0."""
    import numpy as np

    from lmforge.core.data.files import resolve_files

    path = work / "tokenize" / f"text-{mb}mb.txt"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    words = np.array(resolve_files(["lmforge:corpus/train.txt"], "data.train")[0].read_text(encoding="utf-8").split())
    rng = np.random.default_rng(0)
    target, written = mb * 1_000_000, 0
    with open(path.with_suffix(".tmp"), "w", encoding="utf-8") as f:
        while written < target:
            lengths = rng.integers(20, 401, size=1000)
            picks = words[rng.integers(0, len(words), size=int(lengths.sum()))]
            ends = np.cumsum(lengths)
            text = "\n".join(" ".join(picks[e - n:e]) for n, e in zip(lengths, ends, strict=True)) + "\n"
            written += f.write(text)
    path.with_suffix(".tmp").rename(path)
    return path


def section(work: Path, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    env = {k: v for k, v in env.items() if k != "TOKENIZERS_PARALLELISM"}
    out: dict[str, Any] = {"cores": len(os.sched_getaffinity(0))}
    for mb in (int(x) for x in args.tokenize_mb.split(",")):
        path = corpus(work, mb)
        rounds = []
        for rnd in range(args.rounds):
            order = ["textdata", "encode_batch"] if rnd % 2 == 0 else ["encode_batch", "textdata"]
            row = {}
            for name in order:
                result = work / f"tokenize-{name}.json"
                child_env = {**env, "TOKENIZERS_PARALLELISM": "true"} if name == "encode_batch" else env
                cmd = [sys.executable, str(Path(__file__).resolve()), name, str(path), str(work), str(result)]
                subprocess.run(cmd, env=child_env, cwd=work, check=True, stdout=subprocess.DEVNULL)
                row[name] = json.loads(result.read_text(encoding="utf-8"))
                print(f"  {mb} MB round {rnd + 1}/{args.rounds} {name:<12} {row[name]['s']:7.2f} s "
                      f"{row[name]['peak_rss_mb']:6.0f} MB peak RSS, {row[name]['peak_anon_mb']:6.0f} MB anonymous",
                      flush=True)
            rounds.append(row)
        ratios = [r["encode_batch"]["s"] / r["textdata"]["s"] for r in rounds]
        out[f"{mb}MB"] = {
            "bytes": path.stat().st_size, "rounds": rounds,
            "textdata/encode_batch": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
                                      "n": len(ratios)},
        }
    return out


def report(result: dict[str, Any]) -> None:
    print(f"\nTokenize + pack vs tokenizers' encode_batch ({result['cores']} cores), medians over rounds:")
    print(f"  {'size':>7} {'contender':<13} {'s':>7} {'MB/s':>7} {'CPU s':>7} {'peak RSS MB':>11} {'anon MB':>8}")
    for size, r in result.items():
        if size == "cores":
            continue
        for name in ("textdata", "encode_batch"):
            s = statistics.median(x[name]["s"] for x in r["rounds"])
            cpu = statistics.median(x[name]["cpu_s"] for x in r["rounds"])
            rss = statistics.median(x[name]["peak_rss_mb"] for x in r["rounds"])
            anon = statistics.median(x[name].get("peak_anon_mb", float("nan")) for x in r["rounds"])
            print(f"  {size:>7} {name:<13} {s:7.2f} {r['bytes'] / s / 1e6:7.2f} {cpu:7.1f} {rss:11.0f} {anon:8.0f}")
        v = r["textdata/encode_batch"]
        print(f"  {size:>7} textdata/encode_batch throughput {v['median']:.3f} [{v['min']:.3f}, {v['max']:.3f}]")


def run_textdata(path: Path, work: Path) -> dict[str, Any]:
    from lmforge.core.data.files import resolve_files
    from lmforge.core.data.text import TextData
    from lmforge.core.data.tokenizer import TokenizerSpec

    val = resolve_files(["lmforge:corpus/val.txt"], "data.val")[0]
    with tempfile.TemporaryDirectory(dir=work) as cache:
        data = TextData(train=str(path), val=str(val), tokenizer=TokenizerSpec(path=str(work / "gpt2" / "tokenizer")),
                        block_size=BLOCK_SIZE, batch_size=16, cache_dir=cache, seed=0)
        data.prepare_data()
        data.setup("fit")
        return {"tokens": int(data.datasets["train"].blocks.numel())}


def run_encode_batch(path: Path, work: Path) -> dict[str, Any]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(work / "gpt2" / "tokenizer" / "tokenizer.json"))
    tokens, batch = 0, []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                batch.append(line.rstrip("\n"))
            if len(batch) == 10_000:
                tokens += sum(len(e.ids) for e in tok.encode_batch(batch))
                batch = []
    tokens += sum(len(e.ids) for e in tok.encode_batch(batch)) if batch else 0
    return {"tokens": tokens}


def worker(name: str, path: Path, work: Path, result: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if name == "textdata":  # the imports (torch, datasets, transformers: seconds) are not the tokenizing
        import lmforge.core.data.text  # noqa: F401
    else:
        import tokenizers  # noqa: F401
    anonymous = AnonymousPeak()
    start = time.perf_counter()
    record = {"textdata": run_textdata, "encode_batch": run_encode_batch}[name](path, work)
    record["s"] = time.perf_counter() - start
    record["peak_anon_mb"] = anonymous.stop()
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    record["cpu_s"] = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    record["peak_rss_mb"] = max(high_water_kb(), kids.ru_maxrss) / 1024
    result.write_text(json.dumps(record), encoding="utf-8")


def high_water_kb() -> int:
    """This process's peak RSS (``VmHWM``): unlike ``ru_maxrss`` it does not carry over the forking parent's,
    which a child started from a large parent would report."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class AnonymousPeak:
    """The highest ``RssAnon`` of this process, sampled every 10 ms on a thread: the memory that is the process's
    own. Peak RSS also counts the pages of memory-mapped files read (the Arrow caches, the cached blocks),
    which the kernel can drop at any time and which grow with the corpus as it is read."""

    def __init__(self) -> None:
        import threading

        self.peak_kb, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    self.peak_kb = max(self.peak_kb, int(line.split()[1]))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_kb / 1024


if __name__ == "__main__":
    worker(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
