"""lmforge: train language models on PyTorch Lightning with plugins.

Importing the package is cheap: the heavy parts (torch, Lightning,
transformers) load only when `lmforge.core` modules that need them do.
"""

__version__ = "0.1.0"
