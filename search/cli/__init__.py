"""The ``phasetune`` command line.

Every command registers itself on the one typer :data:`app` when its module is
imported, so this package imports them all: ``search.cli:main`` (the console script)
and ``python -m search`` then see every command.
"""

from __future__ import annotations

# Each import registers that module's commands; --help lists the commands in the order
# they registered, so these stay in this order rather than sorted.
# isort: off
from search.cli import _search_commands  # noqa: F401  (run, resume)
from search.cli import _train_commands  # noqa: F401  (train)
from search.cli import _results_commands  # noqa: F401  (analyze, report, export, status, ...)
from search.cli import _setup_commands  # noqa: F401  (strategy show, pretrain)

# isort: on
from search.cli._app import app, main
from search.cli._tables import ranking_table
from search.cli._train_commands import retrain_threads

__all__ = ["app", "main", "ranking_table", "retrain_threads"]
