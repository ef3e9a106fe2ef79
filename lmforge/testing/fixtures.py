"""Tiny models and data for the conformance kit, one `Fixture` per objective task.

A fixture is built from lmforge's own pieces (a generated corpus read by
`TextData`, a one-layer HF backbone, `LanguageModel`), so a plugin is checked
exactly where it will run. ``causal_lm`` (GPT-2 + byte-level BPE) and
``masked_lm`` (BERT + WordPiece) come with lmforge; `register_fixture` adds
one for another task (a classification objective with its labeled data).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule

from lmforge.core.backbone import Backbone, build_backbone, build_config
from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining
from lmforge.core.registry import registry

#: Words of the generated corpus: enough variety for a 300-token vocabulary, with gendered words and
#: punctuation so that word-level and bias plugins find something to act on.
WORDS = ("the a cat dog sat ran on in to under mat park tree house river she he her his they we read wrote "
         "cooked walked saw heard quickly slowly green tall warm old new book song bread water doctor nurse "
         "teacher man woman boy girl, and or but. morning evening sun rain").split()


def corpus_lines(n_docs: int, seed: int) -> list[str]:
    """``n_docs`` generated documents of 8 to 30 words (deterministic for ``seed``)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30))).capitalize() + "."
            for _ in range(n_docs)]


def write_corpus(path: Path, n_docs: int, seed: int) -> Path:
    """`corpus_lines` written one document per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(corpus_lines(n_docs, seed)) + "\n", encoding="utf-8")
    return path


def text_data(workdir: Path, algorithm: str) -> LightningDataModule:
    """`TextData` over the kit's corpus: 32-token blocks, batches of 4, a 300-token tokenizer."""
    train, val = workdir / "corpus" / "train.txt", workdir / "corpus" / "val.txt"
    if not train.exists():
        write_corpus(train, 120, seed=1)
        write_corpus(val, 24, seed=2)
    return TextData(train=str(train), val=str(val), block_size=32, batch_size=4, seed=0,
                    tokenizer=TokenizerSpec(train=TokenizerTraining(algorithm=algorithm, vocab_size=300)),
                    cache_dir=str(workdir / "cache"))


@dataclass(frozen=True)
class Fixture:
    """What the kit needs to run a plugin with one objective task.

    Attributes:
        task: The objective task (`lmforge.core.plugins.objective_task`) this fixture serves.
        objective: The registered objective a non-objective plugin is checked with.
        backbone: A tiny backbone for the task.
        data: Makes a fresh DataModule for the task from the kit's working directory (called once per check).
    """

    task: str
    objective: str
    backbone: Backbone
    data: Callable[[Path], LightningDataModule] = field(repr=False)


FIXTURES: dict[str, Fixture] = {
    "causal_lm": Fixture(
        "causal_lm", "CausalLM",
        Backbone("gpt2", {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64}),
        lambda workdir: text_data(workdir, "bpe"),
    ),
    "masked_lm": Fixture(
        "masked_lm", "MaskedLM",
        Backbone("bert", {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2,
                          "intermediate_size": 64, "max_position_embeddings": 64}),
        lambda workdir: text_data(workdir, "wordpiece"),
    ),
}


def register_fixture(fixture: Fixture) -> None:
    """Add (or replace) the fixture for ``fixture.task``, so plugins for that task can be checked."""
    FIXTURES[fixture.task] = fixture


class Workdir:
    """The kit's files: corpus, dataset and tokenizer caches, saved teachers.

    Without a path, a temporary directory removed when the process exits (or the object is collected).
    """

    def __init__(self, path: str | Path | None = None) -> None:
        if path is None:
            path = tempfile.mkdtemp(prefix="lmforge-kit-")
            self._cleanup = weakref.finalize(self, shutil.rmtree, path, True)
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._plain: dict[str, LightningDataModule] = {}

    def data(self, fixture: Fixture) -> LightningDataModule:
        """A fresh DataModule for ``fixture`` (to attach to a trainer, whose model's plugins it runs)."""
        return fixture.data(self.path)

    def plain_data(self, fixture: Fixture) -> LightningDataModule:
        """The fixture's DataModule set up without any plugin (built once): baseline batches, the tokenizer."""
        if fixture.task not in self._plain:
            data = self.data(fixture)
            data.prepare_data()
            data.setup("fit")
            self._plain[fixture.task] = data
        return self._plain[fixture.task]

    def baseline_val(self, fixture: Fixture, tokenizer: Any = None) -> list[dict[str, Any]]:
        """The validation batches of the fixture's data with no plugins; with ``tokenizer`` (when it differs from
        the one trained without plugins), tokenized by it.

        A data filter runs before the tokenizer is trained, so a filter of the training split alone changes the
        tokenizer and with it the validation token ids, though not the validation text.
        """
        plain = self.plain_data(fixture)
        if tokenizer is None or tokenizer.get_vocab() == plain.tokenizer.get_vocab():
            return list(plain.val_dataloader())
        vocabulary = json.dumps(sorted(tokenizer.get_vocab().items())).encode()
        directory = self.path / "tokenizers" / hashlib.sha256(vocabulary).hexdigest()[:16]
        tokenizer.save_pretrained(str(directory))
        data = self.data(fixture)
        data.tokenizer_spec = TokenizerSpec(path=str(directory))
        data.prepare_data()
        data.setup("fit")
        return list(data.val_dataloader())

    def tokenizer(self, fixture: Fixture) -> Any:
        return self.plain_data(fixture).tokenizer

    def teacher(self, fixture: Fixture) -> str:
        """A saved tiny model for the fixture (HF format, with its tokenizer): what a distiller's ``teacher`` names."""
        directory = self.path / "teachers" / fixture.task
        if not (directory / "config.json").exists():
            tokenizer = self.tokenizer(fixture)
            objective = registry().get("objective", fixture.objective).cls
            torch.manual_seed(0)
            model = build_backbone(fixture.backbone, objective.auto_model, build_config(fixture.backbone, tokenizer))
            model.save_pretrained(str(directory))
            tokenizer.save_pretrained(str(directory))
        return str(directory)


#: Required ``__init__`` arguments the kit can fill, by name: ``teacher`` gets a saved tiny model.
REQUIRED_ARGUMENTS: dict[str, Callable[[Workdir, Fixture], Any]] = {
    "teacher": lambda workdir, fixture: workdir.teacher(fixture),
}
