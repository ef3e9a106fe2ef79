"""The bundled instruction set: what scripts/make_instructions.py writes, every answer right by a separate
computation, both shapes alike, and no validation item in training."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from lmforge.core.data.files import bundled_data_dir

ROOT = Path(__file__).resolve().parents[2]
SPLITS = ("train", "val")


def rows(split: str) -> list[dict]:
    text = (bundled_data_dir() / "instructions" / f"{split}.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def test_the_script_writes_the_bundled_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("make_instructions", ROOT / "scripts" / "make_instructions.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setattr(script, "OUT_DIR", tmp_path)
    script.main()
    for split in SPLITS:
        assert (tmp_path / f"{split}.jsonl").read_bytes() == \
            (bundled_data_dir() / "instructions" / f"{split}.jsonl").read_bytes()


def words_of(prompt: str) -> list[str]:
    quoted = re.search(r'"([a-z ]+)"', prompt)
    return (quoted.group(1) if quoted else prompt.rsplit(": ", 1)[1]).split()


def expected(task: str, prompt: str) -> str | None:
    """The answer, computed from the prompt alone (None for facts)."""
    if task in ("add", "subtract", "multiply"):
        a, b = map(int, re.findall(r"\d+", prompt))
        if task == "subtract" and prompt.startswith("Subtract"):
            b, a = a, b  # "Subtract b from a."
        return str({"add": a + b, "subtract": a - b, "multiply": a * b}[task])
    if task == "fact":
        return None
    words = words_of(prompt)
    return {"uppercase": " ".join(words).upper(), "reverse": " ".join(words[::-1]), "count": str(len(words)),
            "sort": " ".join(sorted(words)), "last_word": words[-1]}[task]


@pytest.mark.parametrize("split", SPLITS)
def test_every_answer_is_right(split: str) -> None:
    corpus = (bundled_data_dir() / "corpus" / "train.txt").read_text(encoding="utf-8").lower()
    for row in rows(split):
        answer = expected(row["task"], row["prompt"])
        if answer is None:  # a fact question: the answer is words of a corpus sentence that the question names
            sentences = [s for s in re.split(r"(?<=[.!?]) ", corpus) if row["response"].lower() in s]
            assert sentences, row
        else:
            assert row["response"] == answer, row
        assert row["messages"] == [{"role": "user", "content": row["prompt"]},
                                   {"role": "assistant", "content": row["response"]}]


def test_validation_prompts_are_not_in_training_and_all_tasks_are_there() -> None:
    train, val = rows("train"), rows("val")
    assert not {r["prompt"] for r in val} & {r["prompt"] for r in train}
    assert {r["task"] for r in train} == {r["task"] for r in val} == {
        "add", "subtract", "multiply", "fact", "uppercase", "reverse", "count", "sort", "last_word"}
    assert 2000 <= len(train) <= 3000 and 300 <= len(val) <= 500
