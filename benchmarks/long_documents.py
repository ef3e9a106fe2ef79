"""Tokenizing one very long document: whole, or in pieces (``data.max_document_chars``).

Writes one line of --mb megabytes of English-like words, trains a 300-token BPE tokenizer on a sample, and
tokenizes the line in a fresh process per measurement (so that each peak RSS is its own), alternating
whole / pieces --repeats times. Prints the medians of time and of peak memory, and checks that both give
the same tokens.

    python benchmarks/long_documents.py --mb 10     # about 3 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHILD = textwrap.dedent("""
    import hashlib, json, resource, sys, time
    import numpy as np
    from lmforge.core.data.tokenizer import encode_long, load_tokenizer
    tokenizer = load_tokenizer(sys.argv[1])
    text = open(sys.argv[2], encoding="utf-8").read()
    start = time.perf_counter()
    if sys.argv[3] == "whole":
        ids = np.asarray(tokenizer(text, return_attention_mask=False, verbose=False)["input_ids"], dtype=np.int64)
    else:
        ids = encode_long(tokenizer, text, int(sys.argv[3]))
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "tokens": len(ids), "sha": hashlib.sha256(ids.tobytes()).hexdigest(),
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")


def main() -> None:
    import random

    from lmforge.core.data.tokenizer import TokenizerTraining, train_tokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=10)
    parser.add_argument("--max-chars", type=int, default=100_000, help="data.max_document_chars")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    words = ("the cat sat on a mat and the dog ran to the park while birds sang in tall green trees she read "
             "a book he cooked rice they walked home under the warm evening sun").split()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        sample = " ".join(rng.choice(words) for _ in range(200_000))
        text = ((sample + " ") * (args.mb * 1_000_000 // (len(sample) + 1) + 1))[: args.mb * 1_000_000]
        (Path(tmp) / "line.txt").write_text(text, encoding="utf-8")
        train_tokenizer([sample], TokenizerTraining(vocab_size=300), "bpe").save_pretrained(str(Path(tmp) / "tok"))
        (Path(tmp) / "child.py").write_text(CHILD)
        results: dict[str, list[dict]] = {"whole": [], "pieces": []}
        for _ in range(args.repeats):
            for name, mode in (("whole", "whole"), ("pieces", str(args.max_chars))):
                done = subprocess.run([sys.executable, str(Path(tmp) / "child.py"), str(Path(tmp) / "tok"),
                                       str(Path(tmp) / "line.txt"), mode], capture_output=True, text=True, check=True)
                results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    same = {r["sha"] for rs in results.values() for r in rs}
    print(f"one line of {args.mb} MB, {results['whole'][0]['tokens']:,} tokens; medians of {args.repeats}")
    for name, rs in results.items():
        seconds = statistics.median(r["seconds"] for r in rs)
        peak = statistics.median(r["peak_mb"] for r in rs)
        print(f"  {name:<6}  {seconds:7.1f} s  ({args.mb / seconds:5.2f} MB/s)   peak RSS {peak:7,.0f} MB")
    print("  identical tokens:", len(same) == 1)


if __name__ == "__main__":
    main()
