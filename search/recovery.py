"""Make an interrupted search's last snapshot consistent with what is on storage.

Tune deletes a trial's checkpoints beyond ``CheckpointConfig.num_to_keep`` the moment
a newer one arrives, but snapshots the search only every so often. A crash between the
two leaves a snapshot that names a checkpoint which no longer exists, and on resume Tune
fails that trial ("Could not recover from checkpoint as it does not exist on storage
anymore") although newer checkpoints of it are right there. Before a resume, such a
trial is pointed at the oldest of those, so it continues from the nearest point after
the snapshot.

Tune restores a trial with the result it reported together with the checkpoint. The
trial's ``result.json`` on storage is only brought up to date when Tune snapshots the
search, so for a checkpoint from after the snapshot the result comes from the
``metrics.json`` the engine writes into every checkpoint.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

from trainables.engine import CHECKPOINT_METRICS_FILE
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
        logger.warning(
            "trial %s: the checkpoint the search's last snapshot names (%s) was deleted"
            " before the crash; it resumes from %s",
            trial.trial_dir,
            trial.missing,
            trial.resumes_from,
        )
    return repaired


def _repair_trial(fs: pafs.FileSystem, tune_dir: str, entry: list[str]) -> RepairedTrial | None:
    """Rewrite one ``[trial state, run metadata]`` pair in place if it needs it."""
    from ray.train import Checkpoint
    from ray.train._internal.session import _TrainingResult
    from ray.tune.trainable.metadata import _TrainingRunMetadata
    from ray.tune.utils.serialization import TuneFunctionEncoder, _loads_with_cloudpickle

    trial_state = _loads_with_cloudpickle(entry[0])
    if trial_state.get("status") in _FINISHED or not trial_state.get("relative_logdir"):
        return None
    run_metadata = _TrainingRunMetadata.from_json_state(entry[1])
    manager = run_metadata.checkpoint_manager
    latest = manager.latest_checkpoint_result if manager is not None else None
    if latest is None:
        return None
    trial_dir = f"{tune_dir}/{trial_state['relative_logdir']}"
    recorded_dir, missing = latest.checkpoint.path.rsplit("/", 1)
    if _is_dir(fs, f"{trial_dir}/{missing}"):
        return None
    found = _next_checkpoint(fs, trial_dir, latest.metrics, after=_index(missing))
    if found is None:
        return None
    name, metrics = found

    # The snapshot's own directory: Tune rewrites it on restore if the experiment has
    # moved since.
    result = _TrainingResult(
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
    return RepairedTrial(trial_dir=trial_dir, missing=missing, resumes_from=name)


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


def _next_checkpoint(
    fs: pafs.FileSystem, trial_dir: str, recorded: dict[str, Any], after: int
) -> tuple[str, dict[str, Any]] | None:
    """The oldest checkpoint numbered above ``after`` whose result is known, with it."""
    rows = _results_by_checkpoint(fs, trial_dir)
    for name in _checkpoints(fs, trial_dir):
        if _index(name) <= after:
            continue
        if name in rows:
            return name, rows[name]
        metrics = _read_json(fs, f"{trial_dir}/{name}/{CHECKPOINT_METRICS_FILE}")
        if metrics is not None and "epoch" in metrics:
            # Tune counts one iteration per report, the engine one report per epoch.
            iteration = recorded.get("training_iteration", 0) + (
                metrics["epoch"] - recorded.get("epoch", 0)
            )
            return name, {**metrics, "training_iteration": iteration, "checkpoint_dir_name": name}
    return None


def _read_json(fs: pafs.FileSystem, path: str) -> dict[str, Any] | None:
    try:
        with fs.open_input_stream(path) as stream:
            return json.loads(stream.read().decode())
    except (OSError, json.JSONDecodeError):  # absent, or cut short by the crash
        return None


def _results_by_checkpoint(fs: pafs.FileSystem, trial_dir: str) -> dict[str, dict[str, Any]]:
    """The results in the trial's ``result.json``, by the checkpoint reported with each."""
    try:
        with fs.open_input_stream(f"{trial_dir}/result.json") as stream:
            lines = stream.read().decode().splitlines()
    except OSError:
        return {}
    results = {}
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by the crash
            continue
        if row.get("checkpoint_dir_name"):
            results[row["checkpoint_dir_name"]] = row
    return results
