"""The Pareto front over several metrics, on hand-made trials."""

from __future__ import annotations

from typing import Any

import pytest

from analysis.pareto import pareto_front
from analysis.ranking import TrialRecord
from analysis.targets import MULTITASK, Target

ACC = Target(metric="val/acc", threshold=0.8, direction="max")
LOSS = Target(metric="val/loss", threshold=0.5, direction="min")


def record(trial_id: str, status: str = "done", **metrics: Any) -> TrialRecord:
    metrics = {name.replace("_", "/", 1): value for name, value in metrics.items()}
    return TrialRecord(trial_id, "joint", {}, metrics, status)


def test_front_of_two_metrics_with_a_min_direction() -> None:
    records = [
        record("best_acc", val_acc=0.9, val_loss=0.6),
        record("best_loss", val_acc=0.7, val_loss=0.2),
        record("balanced", val_acc=0.8, val_loss=0.4),
        # Beaten by `balanced` on both: lower accuracy and higher loss.
        record("dominated", val_acc=0.75, val_loss=0.5),
        # Equal accuracy to `best_acc`, worse loss: dominated by one strict difference.
        record("weakly_dominated", val_acc=0.9, val_loss=0.7),
    ]
    assert pareto_front(records, [ACC, LOSS]) == {"best_acc", "best_loss", "balanced"}


def test_direction_decides_which_end_is_better() -> None:
    records = [record("low", val_loss=0.2), record("high", val_loss=0.9)]
    assert pareto_front(records, [LOSS]) == {"low"}
    assert pareto_front(records, [Target("val/loss", 0.5, direction="max")]) == {"high"}


def test_failed_trials_and_trials_missing_a_metric_take_no_part() -> None:
    records = [
        record("failed", status="failed", val_acc=0.99, val_loss=0.01),
        record("no_loss", val_acc=0.95),
        record("nan_loss", val_acc=0.97, val_loss=float("nan")),
        record("stopped", status="stopped", val_acc=0.6, val_loss=0.3),
        record("kept", val_acc=0.7, val_loss=0.4),
    ]
    # Without the excluded ones `stopped` beats `kept` on loss and `kept` it on accuracy.
    assert pareto_front(records, [ACC, LOSS]) == {"stopped", "kept"}


def test_identical_vectors_all_stay_on_the_front() -> None:
    records = [
        record("a", val_acc=0.8, val_loss=0.3),
        record("b", val_acc=0.8, val_loss=0.3),
        record("c", val_acc=0.7, val_loss=0.3),
    ]
    assert pareto_front(records, [ACC, LOSS]) == {"a", "b"}


def test_multitask_targets_and_empty_inputs() -> None:
    scores = {"val/det_map50": 0.5, "val/seg_miou": 0.4, "val/cls_acc": 0.2}
    records = [
        TrialRecord("joint", "joint", {}, scores, "done"),
        TrialRecord("seq", "sequential", {}, {**scores, "val/cls_acc": 0.9}, "done"),
        TrialRecord("seg", "joint", {}, {**scores, "val/seg_miou": 0.7}, "early_stopped"),
    ]
    assert pareto_front(records, MULTITASK.targets) == {"seq", "seg"}
    assert pareto_front([], MULTITASK.targets) == frozenset()
    with pytest.raises(ValueError, match="at least one objective"):
        pareto_front(records, [])
