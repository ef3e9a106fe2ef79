"""``TYPE_CHECKING`` for imports that only annotations need and that the recipe parser must not run.

jsonargparse resolves a class's postponed annotations by executing its module's ``if TYPE_CHECKING:`` blocks
(those that test ``typing.TYPE_CHECKING``), so a heavy import there (``datasets`` and pandas, about 0.4 s and
50 MB) was paid by every ``lmforge fit`` before its first step, even when the data came from a cache that needs
no ``datasets``. A block guarded by ``static.TYPE_CHECKING`` is skipped by jsonargparse and never runs, while
type checkers take it as ``typing.TYPE_CHECKING`` (mypy reads any name ``TYPE_CHECKING`` so).
"""

TYPE_CHECKING = False
