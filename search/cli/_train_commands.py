"""``phasetune train``: train a best config again, outside Ray, from its file alone."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from analysis.ranking_table import format_number
from search.cli._app import app, console, fail

__all__ = ["retrain_threads", "train"]


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
        raise fail(f"{best}: no such file; give a best.yaml written by `phasetune run`") from None
    except (ValueError, KeyError, TypeError) as error:
        raise fail(f"{best}: {error}") from None
    from trainables.launch import train_locally

    # Beside the file, or here when the file is remote.
    folder = Path.cwd() if is_remote(best) else Path(best).parent
    out = output or folder / f"retrain-{time.strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and not resume:
        raise fail(f"--output: {out} exists; choose another directory or pass --resume")
    plan = document.plan
    from trainables.data import DataError, load_dataset

    # Data that moved or broke since the search: one line, before anything is written.
    try:
        load_dataset(plan.data)
    except DataError as error:
        raise fail(str(error)) from None
    console.print(
        f"retraining trial {document.trial_id} ({plan.strategy}), {plan.total_epochs} epochs"
    )
    import torch

    threads, remarks = retrain_threads(document.resources, threads, cuda=torch.cuda.is_available())
    for remark in remarks:
        console.print(remark)

    shown = [*dict.fromkeys(target.metric for target in document.targets), "val/loss"]

    def show(metrics: dict[str, Any]) -> None:
        values = "  ".join(f"{name} {format_number(metrics.get(name))}" for name in shown)
        console.print(f"  phase {metrics['phase']} epoch {metrics['epoch']:>3}: {values}")

    reporter = train_locally(
        plan, document.targets, out, on_report=show, resume=resume, threads=threads
    )
    final = reporter.history[-1] if reporter.history else {}
    (out / "retrain.json").write_text(
        json.dumps(
            {"searched": document.metrics, "retrained": final, "history": reporter.history},
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
        searched, retrained = document.metrics.get(metric), final.get(metric)
        if metric in ("targets_met", "epoch"):
            # Counts; the search's results table holds them as floats.
            searched, retrained = (None if v is None else int(v) for v in (searched, retrained))
        table.add_row(metric, format_number(searched), format_number(retrained))
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
    from analysis.export import load_best
    from trainables.storage import local_copy

    with local_copy(best) as path:
        return load_best(path)
