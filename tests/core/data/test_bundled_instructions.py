"""The bundled instruction set scores generalisation, not recall: no held-out prompt occurs in training, and no
held-out arithmetic or word-list item (the operands, the word list) occurs in training in any phrasing."""

from __future__ import annotations

import json
import re

from lmforge.core.data.files import bundled_data_dir


def rows(split: str) -> list[dict]:
    path = bundled_data_dir() / "instructions" / f"{split}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def item(row: dict) -> tuple:
    """What a prompt asks about, whatever its phrasing: the task and its operands or its word list."""
    prompt = row["prompt"]
    if row["task"] in ("add", "subtract", "multiply"):
        return row["task"], tuple(int(n) for n in re.findall(r"\d+", prompt))
    if row["task"] == "fact":
        return row["task"], prompt
    quoted = re.search(r'"([^"]*)"', prompt)
    words = quoted.group(1) if quoted else prompt.split(":", 1)[-1]
    return row["task"], tuple(words.split())


def test_no_held_out_prompt_occurs_in_training() -> None:
    train = {r["prompt"] for r in rows("train")}
    assert not [r["prompt"] for r in rows("val") if r["prompt"] in train]


def test_no_held_out_item_occurs_in_training_in_any_phrasing() -> None:
    train = {item(r) for r in rows("train")}
    val = [item(r) for r in rows("val")]
    assert all(words for _, words in val)  # the parse found each item
    assert not [v for v in val if v in train]
    # The parse is not vacuous: the same item in another phrasing is found.
    assert item({"task": "add", "prompt": "Compute 3 + 4."}) == item({"task": "add", "prompt": "Add 3 and 4."})
    assert item({"task": "count", "prompt": "Count the words: a b"}) == \
        item({"task": "count", "prompt": "Number of words in \"a b\"?"})
