"""An experiment directory as two Arrow tables: one row per trial, one per epoch.

Only files are read (Tune's ``result.json``/``params.json``/``error.txt`` per
trial and the ``plans/<trial>.json`` the search writes), through pyarrow's
filesystems, so a local path and any URI pyarrow accepts work alike and Ray
need not run. ``results.parquet`` and ``epochs.parquet`` open in pandas or
duckdb without phasetune.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from analysis.ranking import TrialRecord
from trainables.phases import PhasePlan
from trainables.storage import ExperimentStore

__all__ = ["ResultTables", "load_results", "trial_records", "write_results"]

#: Metrics whose best epoch is tracked, with the direction that is better.
BEST_OF = {"val/acc": "max", "val/loss": "min", "target_score": "max"}

#: Tune bookkeeping keys that are not metrics of the trial.
_TUNE_KEYS = {
    "timestamp",
    "checkpoint_dir_name",
    "should_checkpoint",
    "done",
    "training_iteration",
    "trial_id",
    "date",
    "time_this_iter_s",
    "time_total_s",
    "pid",
    "hostname",
    "node_ip",
    "config",
    "time_since_restore",
    "iterations_since_restore",
    "checkpoint_path",
}


@dataclasses.dataclass(frozen=True)
class ResultTables:
    """``trials``: one row per trial; ``epochs``: one row per reported epoch."""

    trials: pa.Table
    epochs: pa.Table


def _filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """The file system and directory of an experiment, resolved as the store does."""
    store = ExperimentStore.at(location)
    return store.filesystem, store.root


def _read_text(fs: pafs.FileSystem, path: str) -> str | None:
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read().decode()
    except (FileNotFoundError, OSError):
        return None


def trial_dirs(fs: pafs.FileSystem, tune_dir: str) -> list[str]:
    """The trial directories under a search's ``tune`` directory."""
    selector = pafs.FileSelector(tune_dir, allow_not_found=True)
    return sorted(
        info.path
        for info in fs.get_file_info(selector)
        if info.type == pafs.FileType.Directory and not info.base_name.startswith(".")
    )


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _status(history: list[dict[str, Any]], error: str | None) -> str:
    """How a trial ended: ``done``, ``early_stopped``, ``stopped`` (by the scheduler),
    ``failed`` or ``pending``.

    A plan that ran to the end is done even beside an ``error.txt``: Tune keeps
    that file when a retry after a failure then succeeds.
    """
    if not history:
        return "failed" if error is not None else "pending"
    last = history[-1]
    if not all(math.isfinite(v) for v in last.values() if _numeric(v)):
        return "failed"
    if last.get("plan_complete"):
        return "early_stopped" if last.get("early_stopped") else "done"
    return "failed" if error is not None else "stopped"


def _error_line(text: str | None) -> str | None:
    if not text:
        return None
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "failed"


def _one_per_epoch(results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Results in epoch order, the last report of an epoch winning.

    A trial resumed after a crash continues from the last checkpoint Tune had
    recorded, which can be one epoch behind what it had already reported; that
    epoch then appears twice in ``result.json``.
    """
    by_epoch: dict[Any, dict[str, Any]] = {}
    for result in results:
        by_epoch[result.get("epoch", len(by_epoch) + 1)] = result
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def _trial_row(
    trial_id: str, history: list[dict], config: dict, plan: dict | None, error: str | None
) -> dict:
    strategy = config.get("strategy")
    params = config.get(strategy, {}) if strategy else {}
    last = history[-1] if history else {}
    status = _status(history, error)
    phases = PhasePlan.from_dict(plan).phases if plan else None
    row: dict[str, Any] = {
        "trial_id": trial_id,
        "status": status,
        "error": error if status == "failed" else None,
        "strategy": strategy,
        "epochs": int(last.get("epoch", 0) or 0),
        "wall_time_s": float(last.get("time_total_s", 0.0) or 0.0),
        "plan/total_epochs": sum(p.epochs for p in phases) if phases is not None else None,
        "plan/epochs": [p.epochs for p in phases] if phases is not None else None,
        "plan/lr": [float(p.lr) for p in phases] if phases is not None else None,
        "plan/trainable": [str(p.trainable) for p in phases] if phases is not None else None,
        "plan/json": json.dumps(plan) if plan else None,
    }
    for name, value in params.items():
        row[f"param/{strategy}/{name}"] = value
    for name, value in last.items():
        if name not in _TUNE_KEYS and _numeric(value):
            row[f"final/{name}"] = float(value)
    for name, direction in BEST_OF.items():
        values = [(r[name], r.get("epoch")) for r in history if _numeric(r.get(name))]
        values = [(v, e) for v, e in values if math.isfinite(v)]
        if values:
            value, epoch = (max if direction == "max" else min)(values, key=lambda item: item[0])
            row[f"best/{name}"], row[f"best_epoch/{name}"] = float(value), int(epoch)
    return row


def _epoch_rows(trial_id: str, strategy: str | None, history: Iterable[dict]) -> list[dict]:
    rows = []
    for result in history:
        row = {"trial_id": trial_id, "strategy": strategy}
        row.update({k: float(v) for k, v in result.items() if k not in _TUNE_KEYS and _numeric(v)})
        for key in ("epoch", "phase"):
            if key in row:
                row[key] = int(row[key])
        rows.append(row)
    return rows


def _table(rows: list[dict]) -> pa.Table:
    """Rows with differing keys as one table (missing values null, columns sorted
    with the identifying ones first)."""
    first = ["trial_id", "status", "error", "strategy", "epoch", "phase"]
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    ordered = [n for n in first if n in names] + sorted(n for n in names if n not in first)
    return pa.Table.from_pylist([{n: row.get(n) for n in ordered} for row in rows])


def load_results(experiment_dir: str) -> ResultTables:
    """Read an experiment directory (path or URI) into the two tables."""
    fs, root = _filesystem(experiment_dir)
    trial_rows, epoch_rows = [], []
    for trial_dir in trial_dirs(fs, f"{root}/tune"):
        trial_id = trial_dir.rsplit("/", 1)[-1]
        params_text = _read_text(fs, f"{trial_dir}/params.json")
        if params_text is None:
            continue
        config = json.loads(params_text)
        results_text = _read_text(fs, f"{trial_dir}/result.json") or ""
        history = _one_per_epoch(
            json.loads(line) for line in results_text.splitlines() if line.strip()
        )
        error = _error_line(_read_text(fs, f"{trial_dir}/error.txt"))
        if not history and error is None:
            # Created but never reported (e.g. started just before a crash and not
            # resumed: the resumed search replaced it with a new trial). A trial that
            # failed before its first report stays: its error is its result.
            continue
        plan_text = _read_text(fs, f"{root}/plans/{trial_id}.json")
        plan = json.loads(plan_text) if plan_text else None
        trial_rows.append(_trial_row(trial_id, history, config, plan, error))
        epoch_rows.extend(_epoch_rows(trial_id, config.get("strategy"), history))
    return ResultTables(trials=_table(trial_rows), epochs=_table(epoch_rows))


def write_results(experiment_dir: str, tables: ResultTables | None = None) -> tuple[str, str]:
    """Write ``results.parquet`` and ``epochs.parquet`` beside the experiment
    (``tables`` if already loaded)."""
    tables = tables or load_results(experiment_dir)
    fs, root = _filesystem(experiment_dir)
    paths = (f"{root}/results.parquet", f"{root}/epochs.parquet")
    pq.write_table(tables.trials, paths[0], filesystem=fs)
    pq.write_table(tables.epochs, paths[1], filesystem=fs)
    return paths


def trial_records(trials: pa.Table) -> list[TrialRecord]:
    """The trials table's rows as ranking records (metrics are the final ones)."""
    records = []
    for row in trials.to_pylist():
        strategy = row.get("strategy") or "?"
        prefix = f"param/{strategy}/"
        params = {
            k[len(prefix) :]: v for k, v in row.items() if k.startswith(prefix) and v is not None
        }
        metrics = {
            k[len("final/") :]: v
            for k, v in row.items()
            if k.startswith("final/") and v is not None
        }
        # Read into a PhasePlan once, by the record (its ``phase_plan``).
        plan = json.loads(row["plan/json"]) if row.get("plan/json") else None
        records.append(
            TrialRecord(
                trial_id=row["trial_id"],
                strategy=strategy,
                params=params,
                metrics=metrics,
                status=row["status"],
                plan=plan,
                error=row.get("error"),
            )
        )
    return records
