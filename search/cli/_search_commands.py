"""``phasetune run`` and ``phasetune resume``: the commands that run a search on Ray."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from search.cli._app import ADDRESS_OPTION, app, console, errors, fail, saved_experiment
from search.cli._tables import ranking_table
from search.config import ConfigError, load_experiment
from search.storage_full import StorageFull

__all__ = ["resume", "run"]


@app.command()
def run(
    experiment: Annotated[
        Path | None,
        typer.Argument(help="Experiment YAML; omit it for the built-in quickstart."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Override the experiment's name.")] = None,
    num_samples: Annotated[
        int | None, typer.Option("--num-samples", "-n", help="Override search.num_samples.")
    ] = None,
    results_dir: Annotated[
        str | None,
        typer.Option(help="Override storage.path (where experiments go): a path or a URI."),
    ] = None,
    study: Annotated[
        str | None,
        typer.Option(help="Override storage.study: an Optuna RDB URL or a journal file."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Move an existing experiment of that name aside and start anew.")
    ] = False,
    address: Annotated[str | None, ADDRESS_OPTION] = None,
) -> None:
    """Search strategies as the experiment file says; print the ranking, export the best."""
    try:
        config = load_experiment(experiment)
        config = _with_overrides(
            config, name=name, num_samples=num_samples, results_dir=results_dir, study=study
        )
        from search.experiment import run_search

        outcome = run_search(
            config,
            overwrite=overwrite,
            address=address,
            on_stage=lambda message: console.print(f"[dim]phasetune:[/] {message}"),
        )
    except ConfigError as error:
        raise fail(str(error)) from None
    except StorageFull as error:
        raise fail(str(error), code=1) from None
    _print_outcome(outcome, config.target_list())


@app.command()
def resume(
    directory: Annotated[
        str, typer.Argument(help="The directory of an interrupted search (a path or a URI).")
    ],
    address: Annotated[str | None, ADDRESS_OPTION] = None,
) -> None:
    """Continue an interrupted search: finished trials are kept, running ones continue
    from their last checkpoint, and the search ends with the configured trial count."""
    from search.experiment import resume_search

    try:
        outcome = resume_search(
            directory,
            on_stage=lambda message: console.print(f"[dim]phasetune:[/] {message}"),
            address=address,
        )
        targets = saved_experiment(directory).target_list()
    except ConfigError as error:
        raise fail(str(error)) from None
    except StorageFull as error:
        raise fail(str(error), code=1) from None
    _print_outcome(outcome, targets)


def _print_outcome(outcome: Any, targets: Sequence[Any]) -> None:
    console.print(ranking_table(outcome.ranked, targets))
    console.print(f"experiment: {outcome.experiment_dir}")
    if outcome.best_yaml is not None:
        other = str(outcome.best_json).rsplit("/", 1)[-1].split("?")[0]
        console.print(f"best config: {outcome.best_yaml}  (and {other})")
        console.print(f"train it again: phasetune train {outcome.best_yaml}")
    else:
        errors.print("no trial finished; nothing was exported")
    console.print(f"wall time: {outcome.wall_seconds:.0f} s")


def _with_overrides(config: Any, **overrides: Any) -> Any:
    from pydantic import ValidationError

    from search.config import ExperimentConfig, format_validation_error

    raw = config.model_dump()
    if overrides.get("name") is not None:
        raw["name"] = overrides["name"]
    if overrides.get("num_samples") is not None:
        raw["search"]["num_samples"] = overrides["num_samples"]
    if overrides.get("results_dir") is not None:
        raw["storage"]["path"] = overrides["results_dir"]
    if overrides.get("study") is not None:
        raw["storage"]["study"] = overrides["study"]
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, "command line")) from None
