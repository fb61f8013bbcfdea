"""A search killed with SIGKILL resumes to exactly the configured trials."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import yaml
from optuna.trial import TrialState

from search.experiment import resume_search

EXPERIMENT = {
    "name": "killed",
    "dataset": {"num_samples": 360, "image_size": 16, "num_classes": 6},
    "model": {"width": 4, "pretrain": {"num_samples": 400, "epochs": 1}},
    "strategies": {
        "progressive": {"space": {"frozen_epochs": [2, 3], "partial_epochs": 2, "full_epochs": 2}}
    },
    "search": {"num_samples": 4, "max_concurrent_trials": 1, "scheduler": "fifo"},
}


def _finished_trials(log_path) -> int:
    return log_path.read_text().count("finished after") if log_path.exists() else 0


def test_sigkilled_search_resumes_to_the_configured_trials(ray_session, tmp_path):
    experiment = tmp_path / "killed.yaml"
    experiment.write_text(yaml.safe_dump(EXPERIMENT))
    log_path = tmp_path / "run.log"
    env = dict(os.environ, RAY_ADDRESS=ray_session.get_runtime_context().gcs_address)
    command = [
        sys.executable,
        "-m",
        "search",
        "run",
        str(experiment),
        "--results-dir",
        str(tmp_path),
    ]
    with log_path.open("w") as log:
        # Joined to the test's Ray, so killing the driver leaves no cluster behind.
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 240
    while _finished_trials(log_path) < 2 and time.monotonic() < deadline:
        assert process.poll() is None, log_path.read_text()
        time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert _finished_trials(log_path) >= 2, log_path.read_text()

    directory = tmp_path / "killed"
    outcome = resume_search(directory)

    trial_ids = [item.record.trial_id for item in outcome.ranked]
    assert len(trial_ids) == 4 == len(set(trial_ids))
    # A trial that reported after Tune's last snapshot is kept aside, not counted.
    aside = [path for path in (directory / "interrupted").glob("*") if path.is_dir()]
    assert all((path / "params.json").is_file() for path in aside)
    assert not {path.name for path in aside} & set(trial_ids)
    assert all(item.record.status == "done" for item in outcome.ranked)
    for item in outcome.ranked:
        result_file = directory / "tune" / item.record.trial_id / "result.json"
        epochs = [json.loads(line)["epoch"] for line in result_file.read_text().splitlines()]
        # No trial started over: epochs only go forward. An interrupted trial continues
        # from the last checkpoint Tune had recorded, so it may repeat at most the one
        # epoch it finished after Tune's last snapshot.
        assert epochs == sorted(epochs), (item.record.trial_id, epochs)
        assert sorted(set(epochs)) == list(range(1, item.record.epochs + 1))
        assert len(epochs) - len(set(epochs)) <= 1
    study = optuna.load_study(study_name="killed", storage=f"sqlite:///{directory / 'study.db'}")
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 4
    assert TrialState.RUNNING not in states  # an orphan of the crash is marked failed
    import pyarrow.parquet as pq

    table = pq.read_table(directory / "results.parquet")
    assert sorted(table.column("trial_id").to_pylist()) == sorted(trial_ids)
    curves = pq.read_table(directory / "epochs.parquet").to_pylist()
    assert len(curves) == sum(item.record.epochs for item in outcome.ranked)
    assert outcome.best_yaml is not None and outcome.best_yaml.exists()


def test_trials_tune_did_not_resume_are_set_aside_not_lost(tmp_path):
    from search.experiment import _set_aside_unresumed
    from trainables.storage import ExperimentStore

    for name in ("kept", "orphan"):
        (tmp_path / "tune" / name).mkdir(parents=True)
        (tmp_path / "tune" / name / "params.json").write_text("{}")
        (tmp_path / "tune" / name / "result.json").write_text('{"epoch": 1}\n')
    (tmp_path / "tune" / "empty").mkdir()
    _set_aside_unresumed(ExperimentStore.at(tmp_path), {"kept"})
    assert sorted(p.name for p in (tmp_path / "tune").iterdir()) == ["empty", "kept"]
    assert (tmp_path / "interrupted" / "orphan" / "result.json").read_text() == '{"epoch": 1}\n'


def _rewind_snapshot(tune_dir, checkpoint_name: str, reported_epochs: int) -> None:
    """Make the search's snapshot say what one taken mid-trial says: the trial is
    running and its latest checkpoint is ``checkpoint_name``."""
    from ray.train import Checkpoint
    from ray.train._internal.session import _TrainingResult
    from ray.tune.trainable.metadata import _TrainingRunMetadata
    from ray.tune.utils.serialization import TuneFunctionEncoder, _loads_with_cloudpickle

    snapshot_path = max(tune_dir.glob("experiment_state-*.json"))
    snapshot = json.loads(snapshot_path.read_text())
    (entry,) = snapshot["trial_data"]
    trial_state = _loads_with_cloudpickle(entry[0])
    trial_state["status"] = "RUNNING"
    trial_state["storage"].current_checkpoint_index = int(checkpoint_name.split("_")[1]) + 1
    run_metadata = _TrainingRunMetadata.from_json_state(entry[1])
    rows = [
        json.loads(line)
        for line in (tune_dir / trial_state["relative_logdir"] / "result.json")
        .read_text()
        .splitlines()
    ]
    recorded = _TrainingResult(
        checkpoint=Checkpoint(
            path=str(tune_dir / trial_state["relative_logdir"] / checkpoint_name)
        ),
        metrics=rows[reported_epochs - 1],
    )
    run_metadata.checkpoint_manager._checkpoint_results = [recorded]
    run_metadata.checkpoint_manager._latest_checkpoint_result = recorded
    run_metadata.last_result = rows[reported_epochs - 1]
    run_metadata.invalidate_cache()
    entry[0] = json.dumps(trial_state, cls=TuneFunctionEncoder)
    entry[1] = run_metadata.get_json_state()
    snapshot_path.write_text(json.dumps(snapshot))


def _recorded_checkpoint(tune_dir):
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    snapshot = json.loads(max(tune_dir.glob("experiment_state-*.json")).read_text())
    (entry,) = snapshot["trial_data"]
    return _TrainingRunMetadata.from_json_state(
        entry[1]
    ).checkpoint_manager.latest_checkpoint_result


def test_a_trial_whose_recorded_checkpoint_was_deleted_continues_from_a_newer_one(
    ray_session, tmp_path
):
    from search.config import ExperimentConfig
    from search.experiment import run_search
    from search.recovery import repair_missing_checkpoints
    from trainables.storage import ExperimentStore

    experiment = {
        **EXPERIMENT,
        "name": "rewound",
        "search": {"num_samples": 1, "scheduler": "fifo"},
        "storage": {"path": str(tmp_path)},
    }
    run_search(ExperimentConfig.model_validate(experiment))
    directory = tmp_path / "rewound"
    store = ExperimentStore.at(directory)
    (trial_dir,) = [path for path in (directory / "tune").iterdir() if path.is_dir()]
    result_file = trial_dir / "result.json"
    rows = result_file.read_text().splitlines()
    checkpoints = sorted(path.name for path in trial_dir.glob("checkpoint_*"))
    assert len(checkpoints) == 2  # num_to_keep

    # A snapshot that names a checkpoint still on storage is left alone.
    _rewind_snapshot(directory / "tune", checkpoints[0], len(rows) - 1)
    snapshot = max((directory / "tune").glob("experiment_state-*.json")).read_text()
    assert repair_missing_checkpoints(store) == []
    assert max((directory / "tune").glob("experiment_state-*.json")).read_text() == snapshot

    # The crash: Tune snapshotted the search, and synced result.json, after epoch 4;
    # the trial went on to report epochs 5 to 7, each with a checkpoint, Tune deleted
    # all but the last two (num_to_keep=2), and the driver died before the next snapshot.
    snapshot_epoch = len(rows) - 3
    deleted = f"checkpoint_{snapshot_epoch - 1:06d}"
    assert not (trial_dir / deleted).exists()

    def crash():
        _rewind_snapshot(directory / "tune", deleted, snapshot_epoch)
        # with a row the crash cut short
        result_file.write_text("\n".join(rows[:snapshot_epoch]) + "\n" + rows[-1][:20])

    crash()
    (repaired,) = repair_missing_checkpoints(store)
    assert (repaired.missing, repaired.resumes_from) == (deleted, checkpoints[0])
    # The results from after the snapshot up to that checkpoint come back from it.
    repaired_rows = [json.loads(line) for line in result_file.read_text().splitlines()]
    original_rows = [json.loads(line) for line in rows]
    assert [r["epoch"] for r in repaired_rows] == list(range(1, len(rows)))
    for repaired_row, original in zip(repaired_rows, original_rows, strict=False):
        for name in ("val/acc", "target_score", "plan_progress", "training_iteration"):
            assert repaired_row[name] == original[name], (repaired_row["epoch"], name)
    recorded = _recorded_checkpoint(directory / "tune")
    assert recorded.checkpoint.path.endswith(checkpoints[0])
    assert recorded.metrics["training_iteration"] == len(rows) - 1

    # And a resume repairs the snapshot itself.
    crash()
    outcome = resume_search(directory)

    # Tune restored the trial instead of failing it for the missing checkpoint.
    assert not (trial_dir / "error.txt").exists()
    (item,) = outcome.ranked
    assert item.record.status == "done"
    assert item.record.trial_id == trial_dir.name
    # It went on from the checkpoint after epoch 6. Tune keeps the results it logged
    # in this Ray session, so epoch 7, logged before the "crash", shows twice here; a
    # resume in a new session starts from the repaired result.json instead.
    epochs = [json.loads(line)["epoch"] for line in result_file.read_text().splitlines()]
    assert epochs == [*range(1, len(rows) + 1), len(rows)]
