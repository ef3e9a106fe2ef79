"""lmforge: train language models on PyTorch Lightning with plugins.

Importing the package is cheap: the heavy parts (torch, Lightning,
transformers) load only when the modules that need them do.
"""

from lmforge import _compat

__version__ = "0.2.0"

_compat.install()  # lmforge 0.1's import paths, until 0.3 (see lmforge/_compat.py)
