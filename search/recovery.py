"""Make an interrupted search's last snapshot consistent with what is on storage.

Tune deletes a trial's checkpoints beyond ``CheckpointConfig.num_to_keep`` the moment
a newer one arrives, but snapshots the search only every so often. A crash between the
two leaves a snapshot that names a checkpoint which no longer exists, and on resume Tune
fails that trial ("Could not recover from checkpoint as it does not exist on storage
anymore") although newer checkpoints of it are right there. Before a resume, such
trials are pointed at their newest checkpoint, so they continue from it.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

from trainables.storage import ExperimentStore

logger = logging.getLogger(__name__)

__all__ = ["RepairedTrial", "repair_missing_checkpoints"]

_CHECKPOINT_NAME = re.compile(r"checkpoint_(\d+)$")
_FINISHED = ("TERMINATED", "ERROR")


@dataclass(frozen=True)
class RepairedTrial:
    """A trial whose snapshot named a deleted checkpoint, and the one it now resumes from."""

    trial_dir: str
    missing: str
    resumes_from: str


def repair_missing_checkpoints(store: ExperimentStore) -> list[RepairedTrial]:
    """Point every unfinished trial whose recorded checkpoint is gone at its newest one.

    Only such trials are touched; the snapshot is rewritten only if one was found.
    A trial with no checkpoint left, or whose newest checkpoint has no result row to
    go with it, is left as it is.
    """
    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint

    fs, tune_dir = store.filesystem, f"{store.root}/tune"
    snapshot_path = _find_newest_experiment_checkpoint(tune_dir, fs)
    if snapshot_path is None:
        return []
    with fs.open_input_stream(snapshot_path) as stream:
        snapshot = json.loads(stream.read().decode())

    repaired = []
    for entry in snapshot["trial_data"]:
        repair = _repair_trial(fs, tune_dir, entry)
        if repair is not None:
            repaired.append(repair)
    if repaired:
        name = snapshot_path.rsplit("/", 1)[-1]
        store.write_text(f"tune/{name}", json.dumps(snapshot))
        for trial in repaired:
            logger.warning(
                "trial %s: its recorded checkpoint %s was deleted before the crash;"
                " it resumes from %s",
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
    if trial_state.get("status") in _FINISHED:
        return None
    run_metadata = _TrainingRunMetadata.from_json_state(entry[1])
    manager = run_metadata.checkpoint_manager
    latest = manager.latest_checkpoint_result if manager is not None else None
    if latest is None:
        return None
    trial_dir = f"{tune_dir}/{trial_state['relative_logdir']}"
    missing = latest.checkpoint.path.rsplit("/", 1)[-1]
    if _is_dir(fs, f"{trial_dir}/{missing}"):
        return None
    newest = _newest_checkpoint(fs, trial_dir)
    metrics = _result_row(fs, trial_dir, newest) if newest else None
    if newest is None or metrics is None:
        return None

    # Paths keep the snapshot's own prefix: Tune rewrites it on restore if the
    # experiment has moved since.
    recorded_dir = latest.checkpoint.path.rsplit("/", 1)[0]
    newest_result = _TrainingResult(
        checkpoint=Checkpoint(path=f"{recorded_dir}/{newest}", filesystem=fs),
        metrics=metrics,
    )
    manager._checkpoint_results = [
        result
        for result in manager._checkpoint_results
        if _is_dir(fs, f"{trial_dir}/{result.checkpoint.path.rsplit('/', 1)[-1]}")
    ] + [newest_result]
    manager._latest_checkpoint_result = newest_result
    run_metadata.invalidate_cache()
    # The trial's next checkpoint must not land in (and later delete) an existing one.
    trial_state["storage"].current_checkpoint_index = _index(newest) + 1
    entry[0] = json.dumps(trial_state, indent=2, cls=TuneFunctionEncoder)
    entry[1] = run_metadata.get_json_state()
    return RepairedTrial(trial_dir=trial_dir, missing=missing, resumes_from=newest)


def _is_dir(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.Directory


def _index(name: str) -> int:
    match = _CHECKPOINT_NAME.match(name)
    return int(match.group(1)) if match else -1


def _newest_checkpoint(fs: pafs.FileSystem, trial_dir: str) -> str | None:
    infos = fs.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True))
    names = [
        info.base_name
        for info in infos
        if info.type == pafs.FileType.Directory and _CHECKPOINT_NAME.match(info.base_name)
    ]
    return max(names, key=_index, default=None)


def _result_row(fs: pafs.FileSystem, trial_dir: str, checkpoint_name: str) -> dict[str, Any] | None:
    """The result the trial reported with ``checkpoint_name``: what Tune restores it with."""
    try:
        with fs.open_input_stream(f"{trial_dir}/result.json") as stream:
            lines = stream.read().decode().splitlines()
    except (FileNotFoundError, OSError):
        return None
    for line in reversed(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by the crash
            continue
        if row.get("checkpoint_dir_name") == checkpoint_name:
            return row
    return None
