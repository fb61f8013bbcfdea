"""A multi-task search end to end on tiny scenes: joint vs sequential, per-task
metrics, forgetting, targets, and the multi-objective (Pareto) study."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend
from typer.testing import CliRunner

from search.cli import app
from search.config import ExperimentConfig
from search.experiment import run_search

TINY_MULTITASK = {
    "name": "tiny-multitask",
    "dataset": {
        "kind": "synthetic_scenes",
        "num_samples": 160,
        "image_size": 16,
        "num_classes": 4,
    },
    "model": {"width": 4, "pretrain": {"num_samples": 400, "epochs": 1}},
    "strategies": {"sequential": {"space": {}}, "joint": {"space": {}}},
    # 0.05 turns joint's 5/40/5 into 1/2/1 and sequential's 15 per task into 1.
    "search": {
        "num_samples": 3,
        "epoch_scale": 0.05,
        "seed": 0,
        "scheduler": "fifo",
        "objective": "pareto",
    },
    "targets": "multitask",
}


@pytest.fixture(scope="module")
def searched(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    # The study in a journal file instead of the default SQLite database.
    storage = {"path": str(root), "study": str(root / "study.journal")}
    config = ExperimentConfig.model_validate({**TINY_MULTITASK, "storage": storage})
    return config, run_search(config)


def test_joint_and_sequential_are_ranked_with_per_task_metrics(searched):
    _, outcome = searched
    # The three baselines evaluated first: sequential without and with EWC, then joint.
    assert sorted(item.record.strategy for item in outcome.ranked) == [
        "joint",
        "sequential",
        "sequential",
    ]
    for item in outcome.ranked:
        metrics = item.record.metrics
        assert item.record.status == "done"
        for name in ("val/cls_acc", "val/seg_miou", "val/det_map50", "val/det_map"):
            assert 0.0 <= metrics[name] <= 1.0
        for task in ("seg", "det", "cls"):
            assert metrics[f"forgetting/{task}"] >= 0.0
    keys = [(-i.targets_met, -i.target_score) for i in outcome.ranked]
    assert keys == sorted(keys)
    with_ewc = [i for i in outcome.ranked if i.record.params.get("use_ewc")]
    assert len(with_ewc) == 1
    assert with_ewc[0].record.metrics["train/ewc_penalty"] >= 0.0


def test_the_pareto_study_has_one_objective_per_target_in_its_journal_file(searched):
    config, outcome = searched
    assert not (outcome.experiment_dir / "study.db").exists()
    storage = optuna.storages.JournalStorage(JournalFileBackend(config.storage.study))
    study = optuna.load_study(study_name=config.name, storage=storage)
    assert len(study.directions) == 3
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete and all(len(t.values) == 3 for t in complete)
    assert study.best_trials


def test_retraining_the_best_multi_task_recipe_reproduces_it(searched, tmp_path):
    _, outcome = searched
    out = tmp_path / "retrained"
    args = ["train", str(outcome.best_yaml), "--output", str(out), "--threads", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in ("val/det_map50", "val/seg_miou", "val/cls_acc"):
        assert name in result.output
    report = json.loads((out / "retrain.json").read_text())
    searched, retrained = report["searched"], report["retrained"]
    for name in ("val/det_map50", "val/seg_miou", "val/cls_acc", "forgetting/seg"):
        assert retrained[name] == pytest.approx(searched[name], abs=1e-6), name
    for task in ("seg", "det", "cls"):
        assert (out / f"best_{task}.pt").exists()
