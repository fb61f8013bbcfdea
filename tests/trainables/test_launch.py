"""Trials through Ray: a 2-worker DDP trial and an in-process one report the same way."""

from __future__ import annotations

import os

import torch

from analysis.targets import NSL
from search.experiment import _result_loggers
from tests.conftest import TINY_CONTEXT, TINY_PROGRESSIVE
from trainables.engine import CHECKPOINT_FILE
from trainables.launch import LaunchSettings, trial_driver, trial_resources
from trainables.models import build_model, ensure_pretrained

CONFIG = {"strategy": "progressive", "progressive": TINY_PROGRESSIVE}


def _run_trial(tmp_path, workers: int):
    from ray import tune

    ensure_pretrained(TINY_CONTEXT.model)
    settings = LaunchSettings(
        plan_context=TINY_CONTEXT,
        targets=NSL.targets,
        workers=workers,
        cpus_per_worker=1,
        tensorboard_root=str(tmp_path / "tensorboard"),
        train_storage=str(tmp_path / "train_runs"),
    )
    tuner = tune.Tuner(
        tune.with_resources(
            tune.with_parameters(trial_driver, settings=settings), trial_resources(settings)
        ),
        param_space=CONFIG,
        tune_config=tune.TuneConfig(num_samples=1),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path / "tune"),
            name="t",
            verbose=0,
            callbacks=_result_loggers(),  # the search's own loggers (Tune's are turned off)
        ),
    )
    results = tuner.fit()
    assert results.num_errors == 0, results.errors
    return results[0]


def _state_at(checkpoint_path: str) -> dict:
    return torch.load(os.path.join(checkpoint_path, CHECKPOINT_FILE), weights_only=True)["model"]


def test_two_worker_ddp_trial_keeps_workers_identical_after_unfreezing(ray_session, tmp_path):
    result = _run_trial(tmp_path, workers=2)
    history = result.metrics_dataframe.sort_values("epoch")
    assert list(history["epoch"]) == [1, 2, 3]
    assert list(history["phase"]) == [1, 2, 3]
    # Every layer group, newly unfrozen ones included, is identical on both workers.
    divergence_columns = [c for c in history.columns if c.startswith("ddp/param_divergence")]
    assert len(divergence_columns) == 8  # 6 groups, the heads, and the maximum
    assert (history[divergence_columns] == 0).all().all()
    # ...and the groups unfrozen in phase 2 really trained there (so the check means something).
    torch.manual_seed(0)
    initial = build_model(TINY_CONTEXT.model, 6).state_dict()
    phase2 = _state_at(history.iloc[1]["checkpoint_path"])
    for group in range(6):
        prefix = f"backbone.layer_groups.{group}."
        changed = any(
            not torch.equal(phase2[k], initial[k]) for k in initial if k.startswith(prefix)
        )
        assert changed == (group >= 4), group
    # rank 0 wrote TensorBoard events for the trial
    assert any(
        name.startswith("events.out.tfevents")
        for _, _, files in os.walk(tmp_path / "tensorboard")
        for name in files
    )


def test_in_process_trial_reports_the_same_metrics(ray_session, tmp_path):
    result = _run_trial(tmp_path, workers=1)
    history = result.metrics_dataframe.sort_values("epoch")
    assert list(history["epoch"]) == [1, 2, 3]
    for name in ("val/acc", "val/loss", "lr/group6", "lr/group0", "target_score", "phase"):
        assert name in history.columns
    assert result.checkpoint is not None
    with result.checkpoint.as_directory() as directory:
        state = torch.load(os.path.join(directory, CHECKPOINT_FILE), weights_only=True)
    assert state["position"]["global_epoch"] == 3


def test_a_killed_train_worker_restarts_from_the_last_checkpoint(ray_session, tmp_path):
    import dataclasses
    import json
    import signal
    import threading
    import time

    import psutil
    from ray import tune

    from trainables.data import DataSpec

    # Enough data that 9 epochs take several seconds, so the kill lands mid-run.
    context = dataclasses.replace(
        TINY_CONTEXT, data=DataSpec(num_samples=1600, image_size=16, num_classes=6)
    )
    ensure_pretrained(context.model)
    settings = LaunchSettings(
        plan_context=context,
        targets=NSL.targets,
        workers=2,
        cpus_per_worker=1,
        train_storage=str(tmp_path / "train_runs"),
        max_failures=1,
    )
    config = {
        "strategy": "progressive",
        "progressive": dict(TINY_PROGRESSIVE, frozen_epochs=3, partial_epochs=3, full_epochs=3),
    }
    tuner = tune.Tuner(
        tune.with_resources(
            tune.with_parameters(trial_driver, settings=settings), trial_resources(settings)
        ),
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
        return [json.loads(line)["epoch"] for line in files[0].read_text().splitlines()]

    deadline = time.monotonic() + 180
    while len(reported_epochs()) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(reported_epochs()) >= 4, "the trial never got going"
    killed_after = reported_epochs()[-1]
    # Ray titles actor processes "ray::<class>...".
    workers = [
        process.pid
        for process in psutil.process_iter(["cmdline"])
        if any("RayTrainWorker" in part for part in process.info["cmdline"] or ())
    ]
    assert workers, "no Train worker to kill"
    os.kill(workers[0], signal.SIGKILL)
    fitting.join(timeout=240)
    assert not fitting.is_alive()

    results = outcome["results"]
    assert results.num_errors == 0, results.errors
    epochs = reported_epochs()
    assert killed_after < 9, "the kill came too late to test anything"
    assert epochs[-1] == 9
    # The group restarted from the last checkpoint: epochs only go forward (at most the
    # epoch in flight is repeated), none started over from epoch 1.
    assert epochs == sorted(epochs)
    assert sorted(set(epochs)) == list(range(1, 10))
    assert len(epochs) - len(set(epochs)) <= 1
    history = results[0].metrics_dataframe.drop_duplicates("epoch", keep="last")
    assert list(history.sort_values("epoch")["phase"]) == [1, 1, 1, 2, 2, 2, 3, 3, 3]
