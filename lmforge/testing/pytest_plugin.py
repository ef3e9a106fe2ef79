"""The ``lmforge`` pytest plugin (entry point ``pytest11``): the ``lmforge_kit`` fixture.

Loaded by pytest wherever lmforge is installed; it imports nothing heavy until the fixture is used.
"""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def lmforge_kit(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A `lmforge.testing.Kit` for the session, its corpus and caches in pytest's temporary directory.

    ``lmforge_kit.check(MyPlugin)`` runs the conformance checks (see `lmforge.testing.check_plugin`).
    """
    from lmforge.testing import Kit

    return Kit(tmp_path_factory.mktemp("lmforge-kit"))
