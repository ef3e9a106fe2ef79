"""lmforge.testing: the conformance kit for plugin authors.

Call it from a plugin package's own tests, through the ``lmforge_kit`` pytest
fixture (from the ``lmforge`` pytest plugin, registered when lmforge is
installed; its files live in pytest's temporary directory)::

    from my_package.z_loss import ZLoss

    def test_zloss_keeps_the_plugin_contract(lmforge_kit):
        lmforge_kit.check(ZLoss)                                  # built with its defaults
        lmforge_kit.check(ZLoss, init_args={"weight": 1e-2})      # and with other arguments

or without pytest, ``check_plugin(ZLoss)``. The kit runs the plugin on a tiny
model and batch for each objective task it supports that has a fixture
(``causal_lm``, ``masked_lm``, ``sequence_classification``,
``token_classification``; see `lmforge.testing.conformance` for the checks) and
raises `ConformanceError` naming the check that failed. ``lmforge_kit.teacher``
gives a saved tiny teacher for a distiller (an HF directory, or an lmforge
checkpoint). `step_context` gives the inputs of a plugin's ``loss`` hook on a
tiny model, for tests that compare a plugin's term with a reference
computation. lmforge's own contract test runs the same kit over every
registered plugin.
"""

from lmforge.testing.conformance import (
    ConformanceError,
    ConformanceReport,
    Kit,
    MissingFixture,
    check_plugin,
    default_kit,
)
from lmforge.testing.fixtures import FIXTURES, Fixture, corpus_lines, register_fixture
from lmforge.testing.steps import step_context, tiny_model

__all__ = [
    "FIXTURES",
    "ConformanceError",
    "ConformanceReport",
    "Fixture",
    "Kit",
    "MissingFixture",
    "check_plugin",
    "corpus_lines",
    "default_kit",
    "register_fixture",
    "step_context",
    "tiny_model",
]
