"""A Ray Train worker killed mid-trial: the group restarts from the last checkpoint."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time

from search.experiment import _result_loggers
from tests.conftest import TINY_CONTEXT, TINY_PROGRESSIVE
from tests.trainables.test_launch import trial_settings
from trainables.data import DataSpec
from trainables.launch import tune_trainable

EPOCHS = 9


def _train_worker_pids() -> list[int]:
    """Pids of the live Train workers of the Ray this test is connected to.

    Asks that cluster's state API, so workers of any other Ray on the machine (another
    test's head node, a user's cluster) never count.
    """
    import ray
    from ray.util.state import list_actors

    actors = list_actors(
        # Named: with no address the state API refuses to choose among several Rays.
        address=ray.get_runtime_context().gcs_address,
        filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")],
        raise_on_missing_output=False,
    )
    return sorted(actor.pid for actor in actors if actor.pid)


def test_a_killed_train_worker_restarts_from_the_last_checkpoint(ray_session, tmp_path):
    from ray import tune

    # Enough data that the epochs take seconds, so the kill lands mid-run.
    context = dataclasses.replace(
        TINY_CONTEXT, data=DataSpec(num_samples=3200, image_size=16, num_classes=6)
    )
    settings = trial_settings(tmp_path, context, max_failures=1)
    config = {
        "strategy": "progressive",
        "progressive": dict(TINY_PROGRESSIVE, frozen_epochs=3, partial_epochs=3, full_epochs=3),
    }
    tuner = tune.Tuner(
        tune_trainable(settings),
        param_space=config,
        tune_config=tune.TuneConfig(num_samples=1),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path / "tune"), name="t", verbose=0, callbacks=_result_loggers()
        ),
    )
    outcome = {}
    fitting = threading.Thread(target=lambda: outcome.update(results=tuner.fit()))
    fitting.start()

    def reported_epochs() -> list[int]:
        files = list((tmp_path / "tune" / "t").glob("*/result.json"))
        if not files:
            return []
        lines = files[0].read_text().splitlines()
        return [json.loads(line)["epoch"] for line in lines if line.strip()]

    def checkpoints() -> int:
        # Tune's result.json is written in bursts (several epochs at once, or all of them
        # at the end); the workers' checkpoints land on disk as each epoch ends.
        return len(list((tmp_path / "train_runs").glob("*/checkpoint_*/state.pt")))

    try:
        # Kill once both workers run and two epochs are checkpointed, so there is a
        # checkpoint to go back to and epochs left to run.
        deadline = time.monotonic() + 300
        workers: list[int] = []
        while time.monotonic() < deadline and fitting.is_alive():
            workers = _train_worker_pids()
            if len(workers) == 2 and checkpoints() >= 2:
                break
            time.sleep(0.1)
        assert fitting.is_alive(), f"the trial ended before the kill: {reported_epochs()}"
        assert len(workers) == 2 and checkpoints() >= 2, (workers, checkpoints())
        os.kill(workers[-1], signal.SIGKILL)
        # A new worker group comes up (the killed worker's pid is gone from it).
        replaced = False
        while fitting.is_alive() and not replaced:
            alive = _train_worker_pids()
            replaced = len(alive) == 2 and workers[-1] not in alive and alive != workers
            time.sleep(0.2)
        assert replaced, "no new worker group was started"
    finally:
        fitting.join(timeout=400)
    assert not fitting.is_alive()

    results = outcome["results"]
    assert results.num_errors == 0, results.errors
    epochs = reported_epochs()
    assert epochs[-1] == EPOCHS
    assert sorted(set(epochs)) == list(range(1, EPOCHS + 1))
    # The restarted group went on from a checkpoint, not from the start: wherever the
    # epochs step back, they step back to a checkpointed epoch + 1, never to epoch 1,
    # and repeat at most the two epochs whose checkpoints Train keeps.
    restarts = [(a, b) for a, b in zip(epochs, epochs[1:], strict=False) if b <= a]
    assert len(restarts) <= 1, epochs
    for before, after in restarts:
        assert after > 1 and before - after <= 2, epochs
    history = results[0].metrics_dataframe.drop_duplicates("epoch", keep="last")
    assert list(history.sort_values("epoch")["phase"]) == [1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_a_trial_whose_workers_can_never_be_placed_fails_instead_of_hanging(ray_session, tmp_path):
    """The hang of a killed-worker test that waited with no worker and no result: a
    placement group of a dead Train run (never freed where Ray's state API does not
    answer) held a CPU, and Ray Train retried starting the worker group forever."""
    import ray
    from ray import tune
    from ray.util.placement_group import placement_group, remove_placement_group

    from trainables.launch import WORKER_GROUP_START_RETRIES

    settings = trial_settings(tmp_path)
    config = {"strategy": "progressive", "progressive": TINY_PROGRESSIVE}
    tuner = tune.Tuner(
        tune_trainable(settings),
        param_space=config,
        tune_config=tune.TuneConfig(num_samples=1),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), name="t", verbose=0),
    )
    leaked = placement_group([{"CPU": 1}])
    ray.get(leaked.ready())
    outcome = {}
    fitting = threading.Thread(target=lambda: outcome.update(results=tuner.fit()))
    started = time.monotonic()
    try:
        fitting.start()
        # Each start waits RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S (5 s in the tests).
        fitting.join(timeout=(WORKER_GROUP_START_RETRIES + 1) * 5 + 120)
        assert not fitting.is_alive(), "the trial is still waiting for its workers"
    finally:
        remove_placement_group(leaked)
    results = outcome["results"]
    assert results.num_errors == 1
    assert "worker group startup timed out" in str(results.errors[0])
    assert time.monotonic() - started < (WORKER_GROUP_START_RETRIES + 1) * 5 + 120
