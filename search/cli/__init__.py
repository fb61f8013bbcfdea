"""The ``phasetune`` command line."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from analysis.recipes import plan_tasks
from search.config import ConfigError, load_experiment
from search.progress import plan_summary
from search.storage_full import StorageFull

__all__ = ["app", "main"]

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


def _fail(message: str, code: int = 2) -> typer.Exit:
    """One line on stderr; exit status 2 for a mistake in the input, ``code`` otherwise."""
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=code)


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-2 and value else f"{value:.{digits}f}"
    return "-" if value is None else str(value)


def ranking_table(ranked: list[Any], targets: Sequence[Any], limit: int | None = None) -> Table:
    """Trials best first: each target's metric, forgetting of multi-task plans, verdicts."""
    table = Table(title="Trials ranked: targets met, then target_score, then epochs")
    metrics = list(dict.fromkeys(target.metric for target in targets))
    # Forgetting only means something where a plan trains several tasks.
    tasks = [plan_tasks(item.record.plan) for item in ranked]
    multi_task = [t for t in ("seg", "det", "cls") if any(t in s for s in tasks if len(s) > 1)]
    # Several metric columns: drop the shared "val/" so the recipe keeps its width.
    headers = [m.removeprefix("val/") if len(metrics) > 1 else m for m in metrics]
    table.add_column("#", justify="right")
    table.add_column("trial")
    table.add_column("strategy")
    table.add_column("recipe", min_width=30, ratio=1)
    for header in headers:
        table.add_column(header, justify="right")
    if multi_task:
        table.add_column(f"forgetting\n{'/'.join(multi_task)}", justify="right")
    table.add_column("targets", justify="right")
    table.add_column("target_score", justify="right")
    table.add_column("epochs", justify="right")
    table.add_column("status")
    # Several target metrics: mark the trials no other trial beats on all of them.
    front = frozenset()
    if len(metrics) > 1:
        from analysis.pareto import pareto_front

        front = pareto_front([item.record for item in ranked], targets)
        table.caption = "*: on the Pareto front of the target metrics"
    for item in ranked[:limit]:
        record = item.record
        status = record.status if not record.error else f"failed: {record.error}"
        forgetting = "/".join(
            "-"
            if record.metrics.get(f"forgetting/{t}") is None
            else f"{record.metrics[f'forgetting/{t}']:.2f}"
            for t in multi_task
        )
        table.add_row(
            f"{item.rank}*" if record.trial_id in front else str(item.rank),
            record.trial_id,
            record.strategy,
            plan_summary(record.plan),
            *(_fmt(record.metrics.get(name)) for name in metrics),
            *([forgetting] if multi_task else []),
            f"{item.targets_met}/{len(targets)}",
            _fmt(item.target_score),
            str(record.epochs),
            status,
        )
    return table


#: Where a search's Ray runs; a Ray job's entrypoint has RAY_ADDRESS set already.
ADDRESS_OPTION = typer.Option(
    help="Join this Ray cluster (auto, HOST:PORT or ray://HOST:PORT) instead of starting"
    " Ray here; default: RAY_ADDRESS if set.",
)
#: What the commands that read an experiment take: a path or a URI, kept as text
#: because pathlib would fold ``s3://`` into ``s3:/``.
DIRECTORY_ARGUMENT = typer.Argument(help="An experiment directory (a path or a URI).")


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
        raise _fail(str(error)) from None
    except StorageFull as error:
        raise _fail(str(error), code=1) from None
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
        targets = _experiment(directory).target_list()
    except ConfigError as error:
        raise _fail(str(error)) from None
    except StorageFull as error:
        raise _fail(str(error), code=1) from None
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


@app.command()
def train(
    best: Annotated[
        str,
        typer.Argument(help="A best.yaml (or best.json) written by a search: a path or a URI."),
    ],
    output: Annotated[
        Path | None, typer.Option(help="Where to write the model and TensorBoard events.")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue from the output's last checkpoint.")
    ] = False,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Torch threads (default: the search's trial's, which reproduces its numbers).",
        ),
    ] = None,
) -> None:
    """Train a best-config file's plan again, from that file alone."""
    from trainables.storage import is_remote

    try:
        document = _load_best_anywhere(best)
    except FileNotFoundError:
        raise _fail(f"{best}: no such file; give a best.yaml written by `phasetune run`") from None
    except (ValueError, KeyError, TypeError) as error:
        raise _fail(f"{best}: {error}") from None
    from trainables.launch import train_locally

    # Beside the file, or here when the file is remote.
    folder = Path.cwd() if is_remote(best) else Path(best).parent
    out = output or folder / f"retrain-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and not resume:
        raise _fail(f"--output: {out} exists; choose another directory or pass --resume")
    plan = document.plan
    from trainables.data import DataError, load_dataset

    # Data that moved or broke since the search: one line, before anything is written.
    try:
        load_dataset(plan.data)
    except DataError as error:
        raise _fail(str(error)) from None
    console.print(
        f"retraining trial {document['trial_id']} ({plan.strategy}), {plan.total_epochs} epochs"
    )
    import torch

    threads, remarks = retrain_threads(document.resources, threads, cuda=torch.cuda.is_available())
    for remark in remarks:
        console.print(remark)

    shown = [*dict.fromkeys(target.metric for target in document.targets), "val/loss"]

    def show(metrics: dict[str, Any]) -> None:
        values = "  ".join(f"{name} {_fmt(metrics.get(name))}" for name in shown)
        console.print(f"  phase {metrics['phase']} epoch {metrics['epoch']:>3}: {values}")

    reporter = train_locally(
        plan, document.targets, out, on_report=show, resume=resume, threads=threads
    )
    final = reporter.history[-1] if reporter.history else {}
    (out / "retrain.json").write_text(
        json.dumps(
            {"searched": document["metrics"], "retrained": final, "history": reporter.history},
            indent=2,
            default=str,
        )
        + "\n"
    )
    table = Table(title="Searched vs retrained")
    table.add_column("metric")
    table.add_column("searched", justify="right")
    table.add_column("retrained", justify="right")
    for metric in (*shown, "target_score", "targets_met", "epoch"):
        searched, retrained = document["metrics"].get(metric), final.get(metric)
        if metric in ("targets_met", "epoch"):
            # Counts; the search's results table holds them as floats.
            searched, retrained = (None if v is None else int(v) for v in (searched, retrained))
        table.add_row(metric, _fmt(searched), _fmt(retrained))
    console.print(table)
    console.print(f"model: {out / 'model.pt'}\ntensorboard: {out / 'tensorboard'}")


def retrain_threads(
    recorded: dict[str, Any] | None, threads: int | None, *, cuda: bool
) -> tuple[int | None, list[str]]:
    """Torch threads to train a best config again with (None: torch's default), and
    what to tell the user about how the retrain compares with the search's trial.

    By default the trial's own count: a 1-worker trial's numbers depend on it, so a
    retrain with torch's default (every core) ends slightly elsewhere.
    """
    if recorded is None:
        remark = "this file does not record the trial's torch threads"
        if threads is None:
            remark += "; --threads 1 reproduces a 1-CPU trial's numbers"
        return threads, [remark]
    remarks = []
    own = int(recorded["torch_threads"])
    workers = int(recorded["workers_per_trial"])
    if workers > 1:
        remarks.append(
            f"the search trained this on {workers} workers (DDP); this trains it in one"
            " process, so its numbers will differ"
        )
    elif threads is None:
        threads = own
        remarks.append(
            f"torch threads: {own}, as in the search's trial, to reproduce its numbers;"
            " --threads N trains faster on more cores, ending slightly elsewhere"
        )
    elif threads != own:
        remarks.append(
            f"torch threads: {threads}, not the trial's {own}, so its numbers may differ slightly"
        )
    on_gpu = float(recorded["gpus_per_worker"]) > 0
    if on_gpu != cuda:
        remarks.append(
            f"the search trained this on a {'GPU' if on_gpu else 'CPU'}, this trains it on"
            f" a {'GPU' if cuda else 'CPU'}, so its numbers will differ"
        )
    return threads, remarks


def _load_best_anywhere(best: str) -> Any:
    """``load_best`` of a local file, or of a copy of a remote one."""
    import tempfile

    import pyarrow.fs as pafs

    from analysis.export import load_best
    from trainables.storage import is_remote

    if not is_remote(best):
        return load_best(best)
    filesystem, path = pafs.FileSystem.from_uri(best)
    with tempfile.TemporaryDirectory(prefix="phasetune-best-") as staging:
        copy = Path(staging, path.rsplit("/", 1)[-1])
        with filesystem.open_input_stream(path) as stream:
            copy.write_bytes(stream.read())
        return load_best(copy)


def _experiment(directory: str) -> Any:
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


def _ranked(directory: str, targets_option: str | None) -> tuple[Any, Any, tuple]:
    from analysis.ranking import rank_trials
    from analysis.results import load_results, trial_records
    from search.config import load_targets
    from trainables.storage import ExperimentStore

    config = _experiment(directory)
    targets = load_targets(targets_option) if targets_option else config.target_list()
    tables = load_results(ExperimentStore.at(directory).location)
    return config, rank_trials(trial_records(tables.trials), targets), targets


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
        config, ranked, chosen = _ranked(directory, targets)
    except ConfigError as error:
        raise _fail(str(error)) from None
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

    from analysis.importance import experiment_spaces
    from analysis.report import write_report
    from trainables.storage import ExperimentStore

    try:
        config, _, chosen = _ranked(directory, targets)
    except ConfigError as error:
        raise _fail(str(error)) from None
    store = ExperimentStore.at(directory)

    def write(out_dir: str | None) -> Any:
        return write_report(
            store.location,
            name=config.name,
            targets=chosen,
            spaces=experiment_spaces(config),
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
    from search.experiment import export_to
    from trainables.storage import ExperimentStore

    try:
        config, ranked, chosen = _ranked(directory, targets)
    except ConfigError as error:
        raise _fail(str(error)) from None
    if trial is not None:
        picked = [item for item in ranked if item.record.trial_id == trial]
        if not picked:
            ids = ", ".join(item.record.trial_id for item in ranked)
            raise _fail(f"--trial: no trial {trial!r} in {directory}; it has {ids}")
        item = picked[0]
    elif rank > len(ranked):
        raise _fail(f"--rank: {directory} has {len(ranked)} trials, so use 1 to {len(ranked)}")
    else:
        item = ranked[rank - 1]
    if item.failed or item.record.plan is None:
        raise _fail(f"trial {item.record.trial_id} failed; export a trial that trained")
    best_yaml, _ = export_to(ExperimentStore.at(directory), item, chosen, config, output=output)
    console.print(f"exported trial {item.record.trial_id} (rank {item.rank}): {best_yaml}")
    console.print(f"train it again: phasetune train {best_yaml}")


@app.command()
def status(directory: Annotated[str, DIRECTORY_ARGUMENT]) -> None:
    """Where an experiment stands: trials by status and the best so far."""
    from collections import Counter

    try:
        config, ranked, chosen = _ranked(directory, None)
    except ConfigError as error:
        raise _fail(str(error)) from None
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
        raise _fail(
            f"{directory}: TensorBoard is served from local folders here; copy"
            f" {store.uri('tensorboard')} to this machine and give that folder"
        )
    folder = local_path(directory)
    if not (folder / "tensorboard").is_dir():
        raise _fail(
            f"{directory}: no tensorboard/ here; give the directory `phasetune run` printed"
        )
    chosen = port or free_port()
    console.print(f"TensorBoard for {folder}: http://127.0.0.1:{chosen}/ (Ctrl-C stops it)")
    raise typer.Exit(subprocess.call(tensorboard_command(folder, chosen)))


strategy_app = typer.Typer(help="Strategies in the experiment file's syntax.", no_args_is_help=True)
app.add_typer(strategy_app, name="strategy")


@strategy_app.command("show")
def strategy_show(
    name: Annotated[
        str, typer.Argument(help="A built-in (progressive, single_phase) or your own.")
    ],
    experiment: Annotated[
        Path | None,
        typer.Argument(help="Experiment YAML: where your own is defined, and the backbone."),
    ] = None,
) -> None:
    """Print a strategy as an experiment file writes it, to start a recipe of your own."""
    from search.strategy_show import StrategyNotShown, show_strategy

    try:
        config = load_experiment(experiment)
        text = show_strategy(name, config)
    except (ConfigError, StrategyNotShown) as error:
        raise _fail(str(error)) from None
    typer.echo(text, nl=False)


@app.command()
def pretrain(
    experiment: Annotated[
        Path | None, typer.Argument(help="Experiment YAML whose backbone to pretrain.")
    ] = None,
) -> None:
    """Pretrain the experiment's backbone on the synthetic source task (cached)."""
    try:
        config = load_experiment(experiment)
    except ConfigError as error:
        raise _fail(str(error)) from None
    from trainables.models import ensure_pretrained, pretrained_backbone_path

    spec = config.model_spec()
    if spec.pretrained is None:
        raise _fail("model.pretrain.enabled: is false, so there is nothing to pretrain")
    cached = pretrained_backbone_path(spec).exists()
    logging.getLogger("trainables.models").setLevel(logging.INFO)
    path = ensure_pretrained(spec)
    console.print(f"{'cached' if cached else 'pretrained'} backbone: {path}")


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except KeyboardInterrupt:
        errors.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
