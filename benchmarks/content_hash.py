"""The cost of keying the dataset cache by content: hashing the data files at every run start.

``TextData`` hashes its data files (sha256, `lmforge.core.data.files.content_key`) before it asks ``datasets``
for them, so that an edited file is never read from a stale cache. This script writes a text file of
--mb megabytes and times, alternately (A/B, --repeats times, medians):

- ``hash``: `file_sha256` of the file (from the page cache after the first read);
- ``load``: ``datasets.load_dataset`` of the same file from its warm cache, what a run pays anyway.

    python benchmarks/content_hash.py --mb 256      # about a minute on 2 CPU cores
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets  # noqa: E402

from lmforge.core.data.files import file_sha256  # noqa: E402


def write_text(path: Path, mb: int) -> None:
    line = ("the quick brown fox jumps over the lazy dog while lmforge hashes its data " * 4).strip() + "\n"
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(mb * 1_000_000 // len(line)):
            f.write(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=256, help="size of the data file")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.txt"
        write_text(path, args.mb)
        size = path.stat().st_size / 1e6
        cache = str(Path(tmp) / "cache")
        datasets.load_dataset("text", data_files=[str(path)], split="train", cache_dir=cache)  # fill the cache
        file_sha256(path)  # and the page cache
        times: dict[str, list[float]] = {"hash": [], "load": []}
        for _ in range(args.repeats):
            start = time.perf_counter()
            file_sha256(path)
            times["hash"].append(time.perf_counter() - start)
            start = time.perf_counter()
            datasets.load_dataset("text", data_files=[str(path)], split="train", cache_dir=cache)
            times["load"].append(time.perf_counter() - start)
    hash_s, load_s = statistics.median(times["hash"]), statistics.median(times["load"])
    print(f"file: {size:.0f} MB; medians of {args.repeats}")
    print(f"  sha256 of the file:            {hash_s:6.2f} s  ({size / hash_s:,.0f} MB/s)")
    print(f"  load_dataset from warm cache:  {load_s:6.2f} s")
    print(f"  hashing adds {hash_s:.2f} s per {size:.0f} MB at run start ({1000 * hash_s / size:.1f} s per GB)")


if __name__ == "__main__":
    main()
