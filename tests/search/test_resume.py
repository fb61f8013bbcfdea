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
