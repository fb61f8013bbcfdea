"""Trials through Ray: a 2-worker DDP trial and an in-process one report the same way."""

from __future__ import annotations

import os

import pytest
import torch

from analysis.targets import MULTITASK, NSL
from search.experiment import _result_loggers
from tests.conftest import TINY_CONTEXT, TINY_PROGRESSIVE
from trainables.engine import CHECKPOINT_FILE
from trainables.launch import LaunchSettings, tune_trainable
from trainables.models import build_model, ensure_pretrained

CONFIG = {"strategy": "progressive", "progressive": TINY_PROGRESSIVE}


def _one_trial_tuner(tmp_path, settings: LaunchSettings, config: dict):
    from ray import tune

    return tune.Tuner(
        tune_trainable(settings),
        param_space=config,
        tune_config=tune.TuneConfig(num_samples=1),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path / "tune"),
            name="t",
            verbose=0,
            callbacks=_result_loggers(),  # the search's own loggers (Tune's are turned off)
        ),
    )


def trial_settings(tmp_path, context=TINY_CONTEXT, targets=NSL.targets, **overrides):
    """2 workers of 1 CPU on ``context`` (its backbone pretrained), Train runs under
    ``tmp_path``; ``overrides`` of any other `LaunchSettings` field."""
    ensure_pretrained(context.model)
    fields = {"workers": 2, "cpus_per_worker": 1, "train_storage": str(tmp_path / "train_runs")}
    return LaunchSettings(plan_context=context, targets=targets, **{**fields, **overrides})


def _run_trial(tmp_path, workers: int):
    settings = trial_settings(
        tmp_path, workers=workers, tensorboard_root=str(tmp_path / "tensorboard")
    )
    results = _one_trial_tuner(tmp_path, settings, CONFIG).fit()
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


def test_two_worker_multi_task_trial_syncs_weights_learned_weighting_and_metrics(
    ray_session, tmp_path
):
    from tests.trainables.test_multitask_engine import SCENE_CONTEXT
    from trainables.engine import EngineContext
    from trainables.engine._loop import Trainer
    from trainables.launch import plan_for_trial

    settings = trial_settings(tmp_path, SCENE_CONTEXT, MULTITASK.targets)
    # Alternating warmup steps leave heads unused (DDP must allow that), and
    # uncertainty weighting learns parameters outside the DDP module.
    params = {
        "warmup_style": "alternate",
        "warmup_epochs": 1,
        "joint_epochs": 1,
        "finetune_epochs": 0,
        "lr": 1e-2,
        "weighting": "uncertainty",
        "batch_size": 32,
    }
    config = {"strategy": "joint", "joint": params}
    results = _one_trial_tuner(tmp_path, settings, config).fit()
    assert results.num_errors == 0, results.errors
    history = results[0].metrics_dataframe.sort_values("epoch")
    divergence = [c for c in history.columns if c.startswith("ddp/param_divergence")]
    assert (history[divergence] == 0).all().all()
    assert history["weight/seg"].iloc[-1] != 1.0
    # Metrics reported by the 2-worker run cover the whole validation split: they
    # equal one process evaluating the final weights on all of it.
    plan = plan_for_trial(config, SCENE_CONTEXT)
    state = torch.load(
        os.path.join(history.iloc[-1]["checkpoint_path"], CHECKPOINT_FILE), weights_only=True
    )

    class _Alone:
        rank, world_size = 0, 1

    trainer = Trainer(plan, EngineContext(threads=1), _Alone())
    trainer.model.load_state_dict(state["model"])
    alone = trainer.evaluate()
    for name in ("val/cls_acc", "val/seg_miou", "val/det_map50", "val/det_map"):
        assert history[name].iloc[-1] == pytest.approx(alone[name], abs=1e-6), name


def test_a_ddp_trial_tune_stops_frees_its_workers_for_the_next_trial(ray_session, tmp_path):
    from ray import tune

    settings = trial_settings(tmp_path)
    # Each 3-epoch trial is stopped after its first (as a scheduler stops one), and the
    # second needs both CPUs the first one's workers held.
    results = tune.Tuner(
        tune_trainable(settings),
        param_space=CONFIG,
        tune_config=tune.TuneConfig(num_samples=2, max_concurrent_trials=1, reuse_actors=True),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path / "tune"),
            name="t",
            verbose=0,
            stop={"training_iteration": 1},
            callbacks=_result_loggers(),
        ),
    ).fit()
    assert results.num_errors == 0, results.errors
    histories = [result.metrics_dataframe for result in results]
    assert [list(history["epoch"]) for history in histories] == [[1], [1]]
    # The stopped trial's thread ended in time for Tune to reuse its actor: its Train
    # run was aborted, not left training.
    assert len({history["pid"].iloc[0] for history in histories}) == 1
