"""The commands that read an experiment's directory, finished or not: ``analyze``,
``report``, ``export``, ``status`` and ``tensorboard``.

None of them starts Ray: they read the tables and files a search left behind.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from search.cli._app import DIRECTORY_ARGUMENT, app, console, fail, ranked_trials
from search.cli._tables import ranking_table
from search.config import ConfigError

__all__ = ["analyze", "export", "report", "status", "tensorboard"]


@app.command()
def analyze(
    directory: Annotated[str, DIRECTORY_ARGUMENT],
    targets: Annotated[
        str | None,
        typer.Option(help="A target set name or a YAML file of targets (default: the run's)."),
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="Rows to show.")] = 10,
) -> None:
    """Rank an experiment's trials (finished or not) and write its Parquet tables."""
    from analysis.results import write_results
    from trainables.storage import ExperimentStore

    try:
        config, ranked, chosen = ranked_trials(directory, targets)
    except ConfigError as error:
        raise fail(str(error)) from None
    console.print(ranking_table(ranked, chosen, limit=top))
    results, epochs = write_results(ExperimentStore.at(directory).location)
    console.print(f"results: {results}\nper-epoch curves: {epochs}")


@app.command()
def report(
    directory: Annotated[str, DIRECTORY_ARGUMENT],
    targets: Annotated[
        str | None,
        typer.Option(help="A target set name or a YAML file of targets (default: the run's)."),
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="Rows of the ranking table.")] = 10,
) -> None:
    """Write a Markdown and a self-contained HTML report with plots to DIRECTORY/report/."""
    import tempfile

    from analysis.report import write_report
    from trainables.storage import ExperimentStore

    try:
        config, _, chosen = ranked_trials(directory, targets)
    except ConfigError as error:
        raise fail(str(error)) from None
    store = ExperimentStore.at(directory)

    def write(out_dir: str | None) -> Any:
        return write_report(
            store.location,
            name=config.name,
            targets=chosen,
            spaces=config.strategy_spaces(),
            num_groups=config.model.num_groups,
            top=top,
            out_dir=out_dir,
        )

    if not store.remote:
        files = write(None)
        console.print(f"report: {files.markdown}\nhtml: {files.html}")
        console.print(f"{len(files.images)} figures in {files.markdown.parent}")
        return
    # Matplotlib and the report write local files; a remote experiment gets a copy.
    with tempfile.TemporaryDirectory(prefix="phasetune-report-") as staging:
        files = write(staging)
        store.upload(staging, "report")
    console.print(f"report: {store.uri('report', 'report.md')}")
    console.print(f"html: {store.uri('report', 'report.html')}")
    console.print(f"{len(files.images)} figures in {store.uri('report')}")


@app.command()
def export(
    directory: Annotated[str, DIRECTORY_ARGUMENT],
    trial: Annotated[str | None, typer.Option(help="Export this trial id.")] = None,
    rank: Annotated[int, typer.Option(min=1, help="Export the trial at this rank.")] = 1,
    targets: Annotated[
        str | None, typer.Option(help="A target set name or a YAML file of targets.")
    ] = None,
    output: Annotated[
        str | None, typer.Option(help="Directory (or URI) for best.yaml/best.json.")
    ] = None,
) -> None:
    """Export a trial (the best by default) as best.yaml + best.json."""
    from search.export import export_to
    from trainables.storage import ExperimentStore

    try:
        config, ranked, chosen = ranked_trials(directory, targets)
    except ConfigError as error:
        raise fail(str(error)) from None
    if trial is not None:
        picked = [item for item in ranked if item.record.trial_id == trial]
        if not picked:
            ids = ", ".join(item.record.trial_id for item in ranked)
            raise fail(f"--trial: no trial {trial!r} in {directory}; it has {ids}")
        item = picked[0]
    elif rank > len(ranked):
        raise fail(f"--rank: {directory} has {len(ranked)} trials, so use 1 to {len(ranked)}")
    else:
        item = ranked[rank - 1]
    if item.failed or item.record.phase_plan is None:
        raise fail(f"trial {item.record.trial_id} failed; export a trial that trained")
    best_yaml, _ = export_to(ExperimentStore.at(directory), item, chosen, config, output=output)
    console.print(f"exported trial {item.record.trial_id} (rank {item.rank}): {best_yaml}")
    console.print(f"train it again: phasetune train {best_yaml}")


@app.command()
def status(directory: Annotated[str, DIRECTORY_ARGUMENT]) -> None:
    """Where an experiment stands: trials by status and the best so far."""
    from collections import Counter

    try:
        config, ranked, chosen = ranked_trials(directory, None)
    except ConfigError as error:
        raise fail(str(error)) from None
    counts = Counter(item.record.status for item in ranked)
    configured = config.search.num_samples
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    console.print(f"{config.name}: {len(ranked)} of {configured} trials ({summary or 'none yet'})")
    if ranked and not ranked[0].failed:
        console.print(ranking_table(ranked, chosen, limit=3))


@app.command()
def tensorboard(
    directory: Annotated[str, DIRECTORY_ARGUMENT],
    port: Annotated[
        int | None, typer.Option(help="Port on 127.0.0.1 (default: a free one).")
    ] = None,
) -> None:
    """Serve TensorBoard for an experiment on 127.0.0.1 until interrupted."""
    import subprocess

    from analysis.tensorboard import free_port, tensorboard_command
    from trainables.storage import ExperimentStore, local_path

    store = ExperimentStore.at(directory)
    if store.remote:
        raise fail(
            f"{directory}: TensorBoard is served from local folders here; copy"
            f" {store.uri('tensorboard')} to this machine and give that folder"
        )
    folder = local_path(directory)
    if not (folder / "tensorboard").is_dir():
        raise fail(f"{directory}: no tensorboard/ here; give the directory `phasetune run` printed")
    chosen = port or free_port()
    console.print(f"TensorBoard for {folder}: http://127.0.0.1:{chosen}/ (Ctrl-C stops it)")
    raise typer.Exit(subprocess.call(tensorboard_command(folder, chosen)))
