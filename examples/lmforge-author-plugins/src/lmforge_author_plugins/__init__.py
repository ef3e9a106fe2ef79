"""lmforge-author-plugins: third-party lmforge plugins, registered by the entry points in pyproject.toml."""

from lmforge_author_plugins.confidence_penalty import ConfidencePenalty
from lmforge_author_plugins.cosine_hidden_distillation import CosineHiddenDistillation
from lmforge_author_plugins.span_corruption import SpanCorruption

__all__ = ["ConfidencePenalty", "CosineHiddenDistillation", "SpanCorruption"]
