"""lmforge.testing: the conformance kit for plugin authors.

Call it from a plugin package's own tests::

    from lmforge.testing import check_plugin
    from my_package import ZLoss

    def test_zloss_keeps_the_plugin_contract():
        check_plugin(ZLoss)                                  # built with its defaults
        check_plugin(ZLoss, init_args={"weight": 1e-2})      # and with other arguments

`check_plugin` runs the plugin on a tiny model and batch for each objective
task it supports (see `lmforge.testing.conformance` for the list of checks)
and raises `ConformanceError` naming the check that failed. `step_context`
gives the inputs of a plugin's ``loss`` hook on a tiny model, for tests that
compare a plugin's term with a reference computation. lmforge's own contract
test runs the same kit over every registered plugin.

With pytest, the ``lmforge_kit`` fixture (from the ``lmforge`` pytest plugin,
registered when lmforge is installed) gives a `Kit` whose files live in
pytest's temporary directory.
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
