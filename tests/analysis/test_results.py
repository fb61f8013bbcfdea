"""Reading an experiment directory: statuses from what trials wrote."""

from __future__ import annotations

import json

import pytest

from analysis.results import load_results


def _trial(root, trial_id, epochs, *, complete, error=None, extra=None):
    directory = root / "tune" / trial_id
    directory.mkdir(parents=True)
    (directory / "params.json").write_text(json.dumps({"strategy": "progressive"}))
    lines = [
        {"epoch": e, "val/acc": 0.1 * e, "plan_complete": int(complete and e == epochs)}
        for e in range(1, epochs + 1)
    ]
    lines += extra or []
    (directory / "result.json").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    if error:
        (directory / "error.txt").write_text(f"Traceback ...\n{error}\n")


@pytest.fixture
def experiment(tmp_path):
    _trial(tmp_path, "done", 3, complete=True)
    _trial(tmp_path, "stopped", 2, complete=False)
    _trial(tmp_path, "failed", 2, complete=False, error="FloatingPointError: diverged")
    # Failed once, then a retry finished the plan: Tune leaves error.txt behind.
    _trial(tmp_path, "retried", 3, complete=True, error="RayActorError: the actor died")
    # A resumed trial repeated epoch 3: the last report of it counts.
    _trial(
        tmp_path,
        "repeated",
        3,
        complete=True,
        extra=[{"epoch": 3, "val/acc": 0.9, "plan_complete": 1}],
    )
    (tmp_path / "tune" / "never_reported").mkdir()
    (tmp_path / "tune" / "never_reported" / "params.json").write_text("{}")
    return load_results(str(tmp_path))


def test_statuses_come_from_the_last_report_and_the_error_file(experiment):
    rows = {row["trial_id"]: row for row in experiment.trials.to_pylist()}
    assert {k: v["status"] for k, v in rows.items()} == {
        "done": "done",
        "stopped": "stopped",
        "failed": "failed",
        "retried": "done",
        "repeated": "done",
    }
    assert rows["failed"]["error"] == "FloatingPointError: diverged"
    assert rows["retried"]["error"] is None


def test_a_repeated_epoch_counts_once_with_its_last_report(experiment):
    rows = {row["trial_id"]: row for row in experiment.trials.to_pylist()}
    assert rows["repeated"]["final/val/acc"] == pytest.approx(0.9)
    curve = [r for r in experiment.epochs.to_pylist() if r["trial_id"] == "repeated"]
    assert [r["epoch"] for r in curve] == [1, 2, 3]
