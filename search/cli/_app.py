"""The one typer app every command registers on, and what the commands share.

The consoles, the one-line error exit, the options several commands take and the
loading of a saved experiment live here, so that the command modules share them
without importing one another.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import typer
from rich.console import Console

from search.config import ConfigError

__all__ = [
    "ADDRESS_OPTION",
    "DIRECTORY_ARGUMENT",
    "app",
    "console",
    "errors",
    "fail",
    "main",
    "ranked_trials",
    "saved_experiment",
]

app = typer.Typer(
    name="phasetune",
    help="Search phased training strategies with Ray Tune and Optuna.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped or logged output gets a wide console, so the ranking table does not wrap.
console = Console(width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

#: Where a search's Ray runs; a Ray job's entrypoint has RAY_ADDRESS set already.
ADDRESS_OPTION = typer.Option(
    help="Join this Ray cluster (auto, HOST:PORT or ray://HOST:PORT) instead of starting"
    " Ray here; default: RAY_ADDRESS if set.",
)
#: What the commands that read an experiment take: a path or a URI, kept as text
#: because pathlib would fold ``s3://`` into ``s3:/``.
DIRECTORY_ARGUMENT = typer.Argument(help="An experiment directory (a path or a URI).")


def fail(message: str, code: int = 2) -> typer.Exit:
    """One line on stderr; exit status 2 for a mistake in the input, ``code`` otherwise."""
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=code)


def saved_experiment(directory: str) -> Any:
    """The experiment file a search saved in its directory (a path or a URI)."""
    from search.experiment import load_saved_experiment
    from trainables.storage import ExperimentStore

    store = ExperimentStore.at(directory)
    if not store.is_file("experiment.yaml"):
        raise ConfigError(
            f"{directory}: not an experiment directory (no experiment.yaml);"
            " give the directory `phasetune run` printed"
        )
    return load_saved_experiment(store)


def ranked_trials(directory: str, targets_option: str | None) -> tuple[Any, Any, tuple]:
    """The saved experiment, its trials ranked and the targets they were ranked by
    (``targets_option`` when given, else the experiment's own)."""
    from analysis.ranking import rank_trials
    from analysis.results import load_results, trial_records
    from search.config import load_targets
    from trainables.storage import ExperimentStore

    config = saved_experiment(directory)
    targets = load_targets(targets_option) if targets_option else config.target_list()
    tables = load_results(ExperimentStore.at(directory).location)
    return config, rank_trials(trial_records(tables.trials), targets), targets


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except KeyboardInterrupt:
        errors.print("interrupted")
        sys.exit(130)
