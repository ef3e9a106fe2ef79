"""The packed-block cache: a warm `TextData` run reads its blocks without ``datasets``.

`TextData` reads documents and tokenizes them through ``datasets`` (cached as Arrow files), then packs the
token column into blocks. Before this cache, every run read both Arrow caches again, imported ``datasets``
(and pandas) to do it, and copied the corpus's tokens into blocks held in memory (4 bytes a token): about
0.4 s and 50 MB before the first step on the quickstart corpus, and memory that grew with the corpus. Here
the blocks of every split are written once, chunk by chunk, as ``.npy`` files under ``cache_dir/blocks/<key>/``
and memory-mapped (copy-on-write) by the run that wrote them and every later one, so pages are read as
batches need them. ``datasets`` cannot do this: its Arrow caches hold token lists per document, not blocks,
and reading them means importing it.

An entry is named by what its blocks depend on (`blocks_key`): the content of the files (sha256), how
validation rows are found (files, or the held-out fraction and seed), the text column, bad-line handling,
document chunking, the block size and the tokenizer's serialized form. A run that trains its tokenizer does
not have that form before it reads the data, so it finds its entry through an alias named by the tokenizer's
training settings instead (`read_alias`); a resumed run, whose tokenizer comes from the checkpoint, finds the
same entry by the tokenizer itself. Runs with data-stage plugins (whose output depends on their own settings
and seeds) and streaming runs do not use the cache. An entry is written into a temporary directory and renamed,
so a killed or concurrent run never leaves a partial one that a later run trusts; an entry that does not load
is removed, with a warning, and built again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmforge.core.data.files import damage_reason, remove_cache_entry

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

#: The entry layout's version, part of every key: a change to the layout or to packing starts new entries.
FORMAT = 1
INFO = "info.json"
TOKENIZER = "tokenizer"


def blocks_key(parts: dict[str, Any]) -> str:
    """An entry's (or alias's) name for ``parts`` (JSON-serializable settings and digests) and `FORMAT`."""
    payload = json.dumps({"format": FORMAT, **parts}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def tokenizer_digest(tokenizer: PreTrainedTokenizerBase, separator: list[int]) -> str | None:
    """What of a tokenizer the blocks depend on, as a digest: its serialized form (``tokenizer.json``) and the
    document ``separator``; None for a tokenizer without a serialized form (its blocks are not cached)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    return hashlib.sha256(json.dumps([backend.to_str(), separator]).encode()).hexdigest()


def read_alias(root: Path, alias: str) -> str | None:
    """The entry name that ``alias`` points at (`BlockWriter.commit` writes it), or None."""
    try:
        return (root / f"{alias}.alias").read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def load_blocks(directory: Path) -> tuple[dict[str, np.ndarray], dict[str, dict[str, int]], Path] | None:
    """The entry in ``directory``: each split's blocks (memory-mapped, copy-on-write), each split's counts (as
    `BlockWriter.add` recorded them) and the directory of the tokenizer they were made with. None when there is
    no entry, or when it is damaged (then it is removed, with a warning)."""
    info_path = directory / INFO
    if not info_path.is_file():
        return None
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        blocks = {}
        for split, counts in info["splits"].items():
            array = np.load(directory / f"{split}.npy", mmap_mode="c")
            if array.dtype != np.int32 or array.shape != (counts["blocks"], counts["block_size"]):
                raise ValueError(f"{split}.npy holds {array.dtype} {array.shape}, the entry says int32 "
                                 f"({counts['blocks']}, {counts['block_size']})")
            blocks[split] = array
        tokenizer = directory / TOKENIZER
        if not (tokenizer / "tokenizer.json").is_file():
            raise ValueError("its tokenizer is missing")
    except Exception as exc:  # a truncated .npy or info.json raises whatever numpy's or json's reader raises
        log.warning("The cached blocks %s are damaged (%s); removing them and building them again.", directory,
                    damage_reason(exc))
        remove_cache_entry(directory)
        return None
    return blocks, info["splits"], tokenizer


class BlockWriter:
    """Writes one entry under ``root``: each split's blocks go to `path` (`lmforge.core.data.token_arrays.pack_column`
    writes them), `add` records its counts, `commit` stores the tokenizer and renames the entry into place."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.temporary = Path(tempfile.mkdtemp(dir=root, prefix=".entry.", suffix=".partial"))
        self.splits: dict[str, dict[str, int]] = {}

    def path(self, split: str) -> Path:
        return self.temporary / f"{split}.npy"

    def add(self, split: str, counts: dict[str, int]) -> None:
        self.splits[split] = counts

    def commit(self, name: str, tokenizer: PreTrainedTokenizerBase, alias: str | None = None) -> None:
        """Store ``tokenizer`` and the counts, rename the entry to ``name`` and point ``alias`` (if any) at it.
        When another run got there first, its entry (the same blocks: the name is the same) is kept. The arrays
        already mapped from the temporary files stay valid after those are removed."""
        tokenizer.save_pretrained(str(self.temporary / TOKENIZER))
        info = {"format": FORMAT, "splits": self.splits}
        (self.temporary / INFO).write_text(json.dumps(info, indent=1), encoding="utf-8")
        directory = self.root / name
        try:
            os.rename(self.temporary, directory)
        except OSError:
            self.abandon()
            if not (directory / INFO).is_file():
                raise
        if alias is not None:
            pointer = self.temporary.with_suffix(".alias")
            pointer.write_text(name, encoding="utf-8")
            os.replace(pointer, self.root / f"{alias}.alias")

    def abandon(self) -> None:
        shutil.rmtree(self.temporary, ignore_errors=True)
