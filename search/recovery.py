"""Make an interrupted search's last snapshot consistent with what is on storage.

Tune deletes a trial's checkpoints beyond ``CheckpointConfig.num_to_keep`` the moment
a newer one arrives, but snapshots the search only every so often. A crash between the
two leaves a snapshot that names a checkpoint which no longer exists, and on resume Tune
fails that trial ("Could not recover from checkpoint as it does not exist on storage
anymore") although newer checkpoints of it are right there. Before a resume, such a
trial is pointed at the oldest of those, so it continues from the nearest point after
the snapshot.

Tune brings a trial's ``result.json`` on storage up to date only when it snapshots the
search, and on resume continues it from there. The results from after the snapshot up
to the checkpoint the trial now resumes from are therefore added to it from the
``reports.json`` the engine writes into every checkpoint (every report of the run so
far), and the last of them is what Tune restores the trial with.
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

from trainables.engine import CHECKPOINT_FILE, CHECKPOINT_REPORTS_FILE
from trainables.storage import ExperimentStore

logger = logging.getLogger(__name__)

__all__ = ["RepairedTrial", "repair_missing_checkpoints"]

_CHECKPOINT_NAME = re.compile(r"checkpoint_(\d+)$")
_FINISHED = ("TERMINATED", "ERROR")


@dataclass(frozen=True)
class RepairedTrial:
    """A trial whose snapshot named a deleted checkpoint, and the one it resumes from."""

    trial_dir: str
    missing: str
    resumes_from: str
    reason: str = "was deleted before the crash"


def repair_missing_checkpoints(store: ExperimentStore) -> list[RepairedTrial]:
    """Point every unfinished trial whose recorded checkpoint is gone at the oldest
    newer one; rewrite the snapshot if any trial was repaired.

    A trial without a newer checkpoint that says what it scored is left as it is.
    """
    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint

    fs, tune_dir = store.filesystem, f"{store.root}/tune"
    snapshot_path = _find_newest_experiment_checkpoint(tune_dir, fs)
    if snapshot_path is None:
        return []
    with fs.open_input_stream(snapshot_path) as stream:
        snapshot = json.loads(stream.read().decode())

    repaired = [r for entry in snapshot["trial_data"] if (r := _repair_trial(fs, tune_dir, entry))]
    if repaired:
        name = snapshot_path.rsplit("/", 1)[-1]
        store.write_text(f"tune/{name}", json.dumps(snapshot))
    for trial in repaired:
        verb = (
            "falls back to"
            if _index(trial.resumes_from) < _index(trial.missing)
            else "resumes from"
        )
        logger.warning(
            "trial %s: the checkpoint the search's last snapshot names (%s) %s; it %s %s",
            trial.trial_dir.rsplit("/", 1)[-1],
            trial.missing,
            trial.reason,
            verb,
            trial.resumes_from,
        )
    return repaired


def _repair_trial(fs: pafs.FileSystem, tune_dir: str, entry: list[str]) -> RepairedTrial | None:
    """Rewrite one ``[trial state, run metadata]`` pair in place if it needs it."""
    from ray.train import Checkpoint

    from search._tune_internals import (
        TrainingResult,
        TrainingRunMetadata,
        TuneFunctionEncoder,
        loads_with_cloudpickle,
    )

    trial_state = loads_with_cloudpickle(entry[0])
    if trial_state.get("status") in _FINISHED or not trial_state.get("relative_logdir"):
        return None
    run_metadata = TrainingRunMetadata.from_json_state(entry[1])
    manager = run_metadata.checkpoint_manager
    latest = manager.latest_checkpoint_result if manager is not None else None
    if latest is None:
        return None
    trial_dir = f"{tune_dir}/{trial_state['relative_logdir']}"
    recorded_dir, missing = latest.checkpoint.path.rsplit("/", 1)
    rows = _read_rows(fs, f"{trial_dir}/result.json")
    if not _is_dir(fs, f"{trial_dir}/{missing}"):
        # The oldest newer one: the nearest point after the snapshot.
        newer = [n for n in _checkpoints(fs, trial_dir) if _index(n) > _index(missing)]
        found = _usable_checkpoint(fs, trial_dir, rows, newer)
        reason = "was deleted before the crash"
    elif not _readable(fs, f"{trial_dir}/{missing}"):
        older = [n for n in _checkpoints(fs, trial_dir) if _index(n) < _index(missing)]
        found = _usable_checkpoint(fs, trial_dir, rows, reversed(older))
        reason = "is unreadable (cut short)"
        if found is not None:
            # The epochs after the fallback are trained again: their rows go, so that
            # the trial's epochs still only go forward.
            rows = [row for row in rows if row.get("epoch", 0) <= found[1][-1]["epoch"]]
            _write_rows(fs, f"{trial_dir}/result.json", rows)
    else:
        return None
    if found is None:
        return None
    name, reports = found
    # Tune counts one iteration per report, the engine one report per epoch.
    offset = latest.metrics.get("training_iteration", 0) - latest.metrics.get("epoch", 0)
    restored = [
        {
            **report,
            "training_iteration": offset + report["epoch"],
            "trial_id": trial_state["trial_id"],
        }
        for report in reports
    ]
    restored[-1]["checkpoint_dir_name"] = name
    synced = max((row.get("epoch", 0) for row in rows), default=0)
    unsynced = [row for row in restored if row["epoch"] > synced]
    if unsynced:
        _write_rows(fs, f"{trial_dir}/result.json", rows + unsynced)
    metrics = next(
        (row for row in reversed(rows) if row.get("checkpoint_dir_name") == name), restored[-1]
    )

    # The snapshot's own directory: Tune rewrites it on restore if the experiment has
    # moved since.
    result = TrainingResult(
        checkpoint=Checkpoint(path=f"{recorded_dir}/{name}", filesystem=fs), metrics=metrics
    )
    manager._checkpoint_results = [
        kept
        for kept in manager._checkpoint_results
        if _is_dir(fs, f"{trial_dir}/{kept.checkpoint.path.rsplit('/', 1)[-1]}")
    ] + [result]
    manager._latest_checkpoint_result = result
    run_metadata.invalidate_cache()
    # The trial's next checkpoint must not land in (and later delete) an existing one.
    trial_state["storage"].current_checkpoint_index = _newest_index(fs, trial_dir) + 1
    entry[0] = json.dumps(trial_state, indent=2, cls=TuneFunctionEncoder)
    entry[1] = run_metadata.get_json_state()
    return RepairedTrial(trial_dir=trial_dir, missing=missing, resumes_from=name, reason=reason)


def _is_dir(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.Directory


def _index(name: str) -> int:
    match = _CHECKPOINT_NAME.match(name)
    return int(match.group(1)) if match else -1


def _checkpoints(fs: pafs.FileSystem, trial_dir: str) -> list[str]:
    """The trial's checkpoint directories, oldest first."""
    infos = fs.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True))
    names = [
        info.base_name
        for info in infos
        if info.type == pafs.FileType.Directory and _CHECKPOINT_NAME.match(info.base_name)
    ]
    return sorted(names, key=_index)


def _newest_index(fs: pafs.FileSystem, trial_dir: str) -> int:
    return max((_index(name) for name in _checkpoints(fs, trial_dir)), default=-1)


def _usable_checkpoint(
    fs: pafs.FileSystem, trial_dir: str, rows: list[dict[str, Any]], names: Iterable[str]
) -> tuple[str, list[dict[str, Any]]] | None:
    """The first of ``names`` whose state file reads back whole and that says what the
    run reported up to it, with those reports: its ``reports.json``, or else
    ``result.json``'s rows up to the one reported with it."""
    for name in names:
        if _readable(fs, f"{trial_dir}/{name}"):
            found = _reports_up_to(fs, trial_dir, rows, name)
            if found is not None:
                return name, found
    return None


def _reports_up_to(
    fs: pafs.FileSystem, trial_dir: str, rows: list[dict[str, Any]], name: str
) -> list[dict[str, Any]] | None:
    reports = _read_json(fs, f"{trial_dir}/{name}/{CHECKPOINT_REPORTS_FILE}")
    if isinstance(reports, list) and reports and all("epoch" in r for r in reports):
        return reports
    for position, row in enumerate(rows):
        if row.get("checkpoint_dir_name") == name:
            return rows[: position + 1]
    return None


def _readable(fs: pafs.FileSystem, checkpoint_dir: str) -> bool:
    """Whether the checkpoint's state file reads back whole: ``torch.save`` writes a zip,
    and a file cut short has lost the zip's closing directory or a member's bytes."""
    try:
        path = f"{checkpoint_dir}/{CHECKPOINT_FILE}"
        with fs.open_input_file(path) as stream, zipfile.ZipFile(stream) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError):
        return False


def _read_json(fs: pafs.FileSystem, path: str) -> Any:
    try:
        with fs.open_input_stream(path) as stream:
            return json.loads(stream.read().decode())
    except (OSError, json.JSONDecodeError):  # absent, or cut short by the crash
        return None


def _read_rows(fs: pafs.FileSystem, path: str) -> list[dict[str, Any]]:
    """A ``result.json``'s rows, without a last line the crash cut short."""
    try:
        with fs.open_input_stream(path) as stream:
            lines = stream.read().decode().splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _write_rows(fs: pafs.FileSystem, path: str, rows: list[dict[str, Any]]) -> None:
    """Replace a ``result.json``; on a local disk through a rename, so that a crash now
    cannot leave it half written (an object store's upload is atomic already)."""
    text = "".join(json.dumps(row) + "\n" for row in rows).encode()
    local = isinstance(fs, pafs.LocalFileSystem)
    target = f"{path}.partial" if local else path
    with fs.open_output_stream(target) as stream:
        stream.write(text)
    if local:
        fs.move(target, path)
