"""The DataModules and what they read: files, tokenizers, streams.

- `BaseTextData` (`base`): what every DataModule shares (seed, cache, tokenizer,
  resumable order, data-stage plugin hooks).
- `TextData` (`text`): raw text packed into blocks for language modelling.
- `LabeledTextData` (`labeled`): labeled examples for classification and tagging.
- `InstructionData` (`instruction_data`): instruction/response examples for supervised
  fine-tuning of a causal LM (``instruction``: chat template and labels; ``instruction_layout``:
  packed or padded batches).
- `streaming`: training files read lazily (``TextData(streaming=True)``).
- `files`: reading local files (and bundled ones, ``lmforge:...``) into HF datasets.
- `tokenizer`: loading, training and caching tokenizers.

The classes load on first use, so that the light modules (``files``) can be
imported without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"BaseTextData": "base", "TextData": "text", "LabeledTextData": "labeled",
            "InstructionData": "instruction_data"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
