"""What the test suite shares besides fixtures: tiny backbones, a generated corpus and data made from it.

The fixtures that use them (``corpus``, ``one_thread``) are in conftest.py; the test plugins, the
NaN-producing ones included, in host_plugins.py. Test modules import these by name (``from tiny import
TINY_GPT2``): the tests directory is on ``sys.path``, as for host_plugins.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from lmforge.core.backbone import Backbone
from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining

#: A one-layer GPT-2, 32 wide: the suite's default causal LM (about 30k parameters with a 300-token vocabulary).
TINY_GPT2 = Backbone(architecture="gpt2", config={"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64})
#: A one-layer BERT, 32 wide: the suite's default encoder (masked LM, classification).
TINY_BERT = Backbone("bert", {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2,
                              "intermediate_size": 64, "max_position_embeddings": 64})

WORDS = ("the cat sat on a mat and the dog ran to the park while birds sang in tall green trees "
         "she read a book he cooked rice they walked home under the warm evening sun").split()


def write_corpus(path: Path, n_docs: int, seed: int = 0, words_per_doc: tuple[int, int] = (8, 30)) -> Path:
    """A small deterministic text corpus, one document per line."""
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(*words_per_doc))) + "." for _ in range(n_docs)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def text_data(corpus: dict[str, Path], cache: Path, **overrides: Any) -> TextData:
    """`TextData` over the ``corpus`` fixture's files: 32-token blocks, batches of 4, a 300-token BPE tokenizer
    trained on the training split and cached in ``cache``, seed 0; ``overrides`` replace any of these
    (``val=None`` holds validation documents out of the training file)."""
    settings: dict[str, Any] = dict(train=str(corpus["train"]), val=str(corpus["val"]), block_size=32, batch_size=4,
                                    seed=0, cache_dir=str(cache),
                                    tokenizer=TokenizerSpec(train=TokenizerTraining(vocab_size=300)))
    return TextData(**{**settings, **overrides})


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    """One JSON value per line."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path
