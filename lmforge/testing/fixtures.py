"""Tiny models and data for the conformance kit, one `Fixture` per objective task.

A fixture is built from lmforge's own pieces (a generated corpus read by
`TextData` or `LabeledTextData`, a one-layer HF backbone, `LanguageModel`), so
a plugin is checked exactly where it will run. lmforge comes with four:
``causal_lm`` (GPT-2 + byte-level BPE), ``masked_lm`` (BERT + WordPiece), and
``sequence_classification`` and ``token_classification`` (BERT + WordPiece over
a generated labelled set: three classes of sentences, words tagged PER/LOC/O).
`register_fixture` adds one for another task.
"""

from __future__ import annotations

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
from lightning.pytorch import LightningDataModule, Trainer

from lmforge.core.backbone import Backbone
from lmforge.core.data.labeled import LabeledTextData
from lmforge.core.data.text import TextData
from lmforge.core.data.tokenizer import TokenizerSpec, TokenizerTraining
from lmforge.core.module import LanguageModel
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


#: Tags of the generated token-classification set: people and places among the corpus' words.
TAGS = {"man": "B-PER", "woman": "B-PER", "boy": "B-PER", "girl": "B-PER", "doctor": "B-PER", "nurse": "B-PER",
        "teacher": "B-PER", "park": "B-LOC", "house": "B-LOC", "river": "B-LOC", "tree": "B-LOC"}
#: Classes of the generated sequence-classification set, drawn with the document.
CLASSES = ("animals", "people", "weather")


def labeled_rows(n_docs: int, seed: int, task: str) -> list[dict[str, Any]]:
    """``n_docs`` generated labelled rows: ``{"text", "label"}`` (a class) or ``{"tokens", "tags"}`` (BIO tags)."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for i, text in enumerate(corpus_lines(n_docs, seed)):
        if task == "token_classification":
            words = text.split()
            rows.append({"tokens": words, "tags": [TAGS.get(w.strip(",.").lower(), "O") for w in words]})
        else:  # every class in every split: the validation labels must occur in training
            rows.append({"text": text, "label": CLASSES[i % len(CLASSES)] if i < len(CLASSES) else rng.choice(CLASSES)})
    return rows


def labeled_data(workdir: Path, task: str) -> LightningDataModule:
    """`LabeledTextData` over a generated labelled set for ``task``: 64 tokens at most, batches of 4."""
    train, val = workdir / task / "train.jsonl", workdir / task / "val.jsonl"
    if not train.exists():
        train.parent.mkdir(parents=True, exist_ok=True)
        for path, n_docs, seed in ((train, 96, 1), (val, 16, 2)):
            rows = labeled_rows(n_docs, seed, task)
            path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    columns = {"text_column": "tokens", "label_column": "tags"} if task == "token_classification" else {}
    return LabeledTextData(train=str(train), val=str(val), max_length=64, batch_size=4, seed=0, **columns,
                           tokenizer=TokenizerSpec(train=TokenizerTraining(algorithm="wordpiece", vocab_size=300)),
                           cache_dir=str(workdir / "cache"))


@dataclass(frozen=True)
class Fixture:
    """What the kit needs to run a plugin with one objective task.

    Attributes:
        task: The objective task (`lmforge.core.plugins.objective_task`) this fixture serves.
        objective: The registered objective a non-objective plugin is checked with.
        backbone: A tiny backbone for the task.
        data: Makes a fresh DataModule for the task from the kit's working directory (called once per check).
        default: Whether a plugin that supports every objective (``supported_objectives = None``) is checked
            on this fixture unasked. The classification fixtures are not: such a plugin is checked on the
            language-model tasks, and on a classification task when ``check_plugin(..., tasks=...)`` names it.
    """

    task: str
    objective: str
    backbone: Backbone
    data: Callable[[Path], LightningDataModule] = field(repr=False)
    default: bool = True


TINY_GPT2 = Backbone("gpt2", {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64})
TINY_BERT = Backbone("bert", {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2,
                              "intermediate_size": 64, "max_position_embeddings": 64})

FIXTURES: dict[str, Fixture] = {
    "causal_lm": Fixture("causal_lm", "CausalLM", TINY_GPT2, lambda workdir: text_data(workdir, "bpe")),
    "masked_lm": Fixture("masked_lm", "MaskedLM", TINY_BERT, lambda workdir: text_data(workdir, "wordpiece")),
    "sequence_classification": Fixture("sequence_classification", "SequenceClassification", TINY_BERT,
                                       lambda workdir: labeled_data(workdir, "sequence_classification"), False),
    "token_classification": Fixture("token_classification", "TokenClassification", TINY_BERT,
                                    lambda workdir: labeled_data(workdir, "token_classification"), False),
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

    def baseline_val(self, fixture: Fixture) -> list[dict[str, Any]]:
        """The validation batches of the fixture's data with no plugins."""
        return list(self.plain_data(fixture).val_dataloader())

    def tokenizer(self, fixture: Fixture) -> Any:
        return self.plain_data(fixture).tokenizer

    def model(self, fixture: Fixture, objective: Any = None, **plugins: Any) -> LanguageModel:
        """A `LanguageModel` of ``fixture`` (its objective, or ``objective``) with ``plugins`` (LanguageModel
        arguments), its objective bound to the fixture's data and its backbone built (plugins set up)."""
        objective = objective if objective is not None else registry().get("objective", fixture.objective).cls()
        model = LanguageModel(fixture.backbone, objective, **plugins)
        self.bind(model, fixture)
        torch.manual_seed(0)
        model.configure_model()
        return model

    def bind(self, model: LanguageModel, fixture: Fixture) -> None:
        """Give ``model`` what ``configure_model`` reads from a trainer's DataModule: the tokenizer, and the
        labels a classification objective takes (a model built outside ``Trainer.fit``)."""
        model.tokenizer = self.tokenizer(fixture)
        model.objective.bind_data(self.plain_data(fixture))

    def teacher(self, fixture: Fixture, checkpoint: bool = False) -> str:
        """A saved tiny model of the fixture: what a distiller's ``teacher`` names.

        Args:
            checkpoint: An lmforge checkpoint (``<task>.ckpt``, as ``lmforge fit`` writes) instead of an
                HF directory with its tokenizer.
        """
        directory = self.path / "teachers" / fixture.task
        path = directory.with_suffix(".ckpt") if checkpoint else directory
        if not (path.is_file() if checkpoint else (directory / "config.json").exists()):
            model = self.model(fixture)
            if checkpoint:
                trainer = Trainer(accelerator="cpu", devices=1, logger=False, max_steps=0, enable_progress_bar=False,
                                  enable_model_summary=False, default_root_dir=str(self.path))
                trainer.strategy.connect(model)
                trainer.save_checkpoint(path)
            else:
                model.backbone.save_pretrained(str(directory))
                model.tokenizer.save_pretrained(str(directory))
        return str(path)


#: Required ``__init__`` arguments the kit can fill, by name: ``teacher`` gets a saved tiny model.
REQUIRED_ARGUMENTS: dict[str, Callable[[Workdir, Fixture], Any]] = {
    "teacher": lambda workdir, fixture: workdir.teacher(fixture),
}
