"""Bad data files: each is reported with the recipe key and the file, and left as it was.

Also: malformed JSON lines can be skipped (and counted); a 100 MB line is tokenized in bounded memory;
the dataset cache follows the files' content and the tokenizer, never their modification time.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from reliability_kit import digests
from tiny import write_corpus

from lmforge.core.data.files import DataFileError
from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining

TOKENIZER = TokenizerSpec(train=TokenizerTraining(vocab_size=300))


def text_data(tmp_path: Path, train: str | list[str], val: str | list[str] | None = None, **kwargs) -> TextData:
    kwargs = {"tokenizer": TOKENIZER, "block_size": 16, "batch_size": 2, "seed": 0, **kwargs}
    return TextData(train=train, val=val, cache_dir=str(tmp_path / "cache"), **kwargs)


def write_jsonl(path: Path, rows: list[str]) -> Path:
    path.write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    return path


def good_rows(n: int) -> list[str]:
    words = "a cat sat on the mat while the dog ran home".split()
    return [json.dumps({"text": " ".join(words[i % 5:]) + f" {i}"}) for i in range(n)]


def broken_files(tmp_path: Path) -> dict[str, tuple[str, list[str]]]:
    """Each case: the train pattern and what the message must hold (besides ``data.train: ``)."""
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "latin1.txt").write_bytes("ok line\ncaf\u00e9 au lait\n".encode("latin-1"))
    write_jsonl(tmp_path / "bad.jsonl", good_rows(2) + ['{"text": "no closing brace"'] + good_rows(2))
    write_jsonl(tmp_path / "body.jsonl", [json.dumps({"body": "x", "id": i}) for i in range(3)])
    (tmp_path / "short.txt").write_text("Few words.\n")
    return {
        "missing file": (str(tmp_path / "nope.txt"), ["file not found", "nope.txt"]),
        "empty file": (str(tmp_path / "empty.txt"), ["empty.txt is empty"]),
        "glob matching nothing": (str(tmp_path / "shards" / "*.txt"), ["pattern", "shards/*.txt", "matches no files"]),
        "undecodable bytes": (str(tmp_path / "latin1.txt"), ["latin1.txt", "offset 11 ", "not valid UTF-8"]),
        "malformed JSON line": (str(tmp_path / "bad.jsonl"), ["bad.jsonl, line 3: malformed JSON",
                                                              "data.skip_bad_lines"]),
        "missing text column": (str(tmp_path / "body.jsonl"), ["body.jsonl", "no column 'text'", "['body', 'id']"]),
        "corpus shorter than one block": (str(tmp_path / "short.txt"), ["short.txt", "fewer than one block",
                                                                         "data.block_size=16"]),
    }


CASES = ["missing file", "empty file", "glob matching nothing", "undecodable bytes", "malformed JSON line",
         "missing text column", "corpus shorter than one block"]


@pytest.mark.parametrize("case", CASES)
def test_bad_file_names_the_key_and_the_file_and_is_left_alone(case: str, tmp_path: Path) -> None:
    pattern, expected = broken_files(tmp_path)[case]
    before = digests(tmp_path)
    # A validation file too for the short corpus, so that the split is not what fails.
    data = text_data(tmp_path, pattern, val=pattern if case == "corpus shorter than one block" else None)
    with pytest.raises(ValueError) as excinfo:
        data.prepare_data()
    message = str(excinfo.value)
    assert message.startswith("data.train: "), message
    for text in expected:
        assert text in message, f"{text!r} not in {message!r}"
    after = {k: v for k, v in digests(tmp_path).items() if "/cache/" not in k}
    assert after == before  # lmforge reads data files; it never changes them


def test_a_bad_validation_file_names_data_val(tmp_path: Path) -> None:
    train = write_corpus(tmp_path / "train.txt", 50, seed=0)
    with pytest.raises(DataFileError, match=r"^data\.val: file not found: .*missing-val\.txt"):
        text_data(tmp_path, str(train), val=str(tmp_path / "missing-val.txt")).prepare_data()


def test_bad_json_lines_can_be_skipped_and_are_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = good_rows(40)
    rows[3] = '{"text": "unterminated'
    rows[17] = "[1, 2, 3]"  # JSON, but not an object
    rows[30] = "not json at all"
    path = write_jsonl(tmp_path / "docs.jsonl", rows)
    before = digests(path)
    data = text_data(tmp_path, str(path), val=str(path), skip_bad_lines=True)
    with caplog.at_level(logging.WARNING, logger="lmforge.core.data.files"):
        data.prepare_data()
    warnings = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert warnings and all(str(path) in w for w in warnings)
    assert "data.train: skipped 3 line(s)" in warnings[0] and "lines 4, 18, 31" in warnings[0]
    expected = [json.loads(r)["text"] for i, r in enumerate(rows) if i not in (3, 17, 30)]
    tokens = sum(len(data.tokenizer(t)["input_ids"]) + 1 for t in expected)  # + the EOS packing puts after each
    assert len(data.datasets["val"]) == tokens // 16  # every good line, and only those, was read
    assert digests(path) == before


def test_dataset_cache_follows_content_not_modification_time(tmp_path: Path) -> None:
    """``datasets`` keys its cache of a local file by path and mtime; lmforge keys it by content."""
    path = tmp_path / "docs.txt"
    path.write_text("alpha beta gamma delta\n" * 40)
    stat = os.stat(path)
    first = text_data(tmp_path, str(path), val=str(path))
    first.prepare_data()
    old_tokens = first.datasets["val"].blocks.flatten().tolist()

    # Same size, same mtime, other words: what `cp -p`, `rsync -t` or `tar x` of an edited file give.
    path.write_text("omega sigma kappa zeta\n" * 40)
    assert os.stat(path).st_size == stat.st_size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = text_data(tmp_path, str(path), val=str(path), tokenizer=TokenizerSpec(path=str(tmp_path / "tok")))
    first.tokenizer.save_pretrained(str(tmp_path / "tok"))  # the same tokenizer, so only the text differs
    second.prepare_data()
    new_text = second.tokenizer.decode(second.datasets["val"].blocks.flatten().tolist())
    assert "omega" in new_text and "alpha" not in new_text
    assert second.datasets["val"].blocks.flatten().tolist() != old_tokens


def test_tokenized_cache_follows_the_tokenizer(tmp_path: Path) -> None:
    path = write_corpus(tmp_path / "docs.txt", 60, seed=4)
    blocks = {}
    for vocab in (300, 330):
        data = text_data(tmp_path, str(path), val=str(path),
                         tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=vocab)))
        data.prepare_data()
        expected = [i for line in path.read_text().splitlines() if line.strip()
                    for i in [*data.tokenizer(line)["input_ids"], data.tokenizer.eos_token_id]]
        got = data.datasets["val"].blocks.flatten().tolist()
        assert got == expected[: len(got)]  # tokens of this tokenizer, not a cached earlier one
        blocks[vocab] = got
    assert blocks[300] != blocks[330]


LONG_LINE_SCRIPT = textwrap.dedent("""
    import json, random, resource, sys, time
    from pathlib import Path
    from lmforge.core.data.text import TextData
    from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining

    root = Path(sys.argv[1])
    # Long words from a small set: few tokens per megabyte, so that the test takes a minute, not five.
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(30)) for _ in range(2)]
    chunk = " ".join(rng.choice(words) for _ in range(100_000))
    line = ((chunk + " ") * (100_000_000 // (len(chunk) + 1) + 1))[:100_000_000]
    (root / "long.txt").write_text(line + "\\n")
    (root / "val.txt").write_text(chunk[:20_000] + "\\n")
    head = line[:10_000]
    del line
    start = time.perf_counter()
    data = TextData(train=str(root / "long.txt"), val=str(root / "val.txt"), block_size=64,
                    tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=300)), cache_dir=str(root / "cache"))
    data.prepare_data()
    blocks = data.datasets["train"].blocks
    print(json.dumps({"seconds": time.perf_counter() - start, "blocks": len(blocks),
                      "first_block_is_the_start": head.startswith(data.tokenizer.decode(blocks[0].tolist())),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")


@pytest.mark.slow
def test_a_single_line_of_100_mb_is_tokenized_in_bounded_memory(tmp_path: Path) -> None:
    """Tokenized whole, a 10 MB line takes 2.1 GB and 32 s on 2 cores, and memory grows with the line; cut
    into pieces (data.max_document_chars) a 100 MB line is read, trained on, tokenized and packed in about a
    minute with a 2 GB peak, mostly the text and its token arrays (benchmarks/long_documents.py)."""
    script = tmp_path / "long_line.py"
    script.write_text(LONG_LINE_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(result)
    assert result["blocks"] > 100_000_000 // 5 // 64  # 3 to 4 characters per token here: all of it was packed
    assert result["first_block_is_the_start"]
    assert result["peak_rss_mb"] < 4000
