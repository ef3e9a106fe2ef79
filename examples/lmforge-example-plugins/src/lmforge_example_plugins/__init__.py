"""lmforge-example-plugins: a third-party plugin package (ZLoss, WordDropout) written against lmforge's
plugin contract and tested with its conformance kit."""

from lmforge_example_plugins.word_dropout import WordDropout
from lmforge_example_plugins.z_loss import ZLoss

__all__ = ["WordDropout", "ZLoss"]
