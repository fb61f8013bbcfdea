"""The console line each finished trial gets."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from search.progress import TrialProgress
from tests.conftest import TINY_CONTEXT


@pytest.mark.parametrize(
    ("result", "shown", "hidden"),
    [
        # A single-task trial reports its accuracy under both names: val/acc is shown.
        (
            {"val/acc": 0.8, "val/cls_acc": 0.8, "epoch": 18, "plan_complete": 1},
            ["finished after 18 epochs", "val/acc 0.8000"],
            ["val/cls_acc"],
        ),
        (
            {"val/det_map50": 0.5, "val/seg_miou": 0.37, "val/cls_acc": 0.15, "epoch": 2},
            ["stopped early", "val/det_map50 0.5000", "val/seg_miou 0.3700", "val/cls_acc 0.1500"],
            ["val/acc "],
        ),
    ],
    ids=["single-task", "multi-task"],
)
def test_a_finished_trial_line_names_its_tasks_metrics(result, shown, hidden, capsys):
    progress = TrialProgress(TINY_CONTEXT, total=3)
    trial = SimpleNamespace(trial_id="abc123", last_result={**result, "target_score": 0.9})
    progress.on_trial_complete(0, [], trial)
    line = " ".join(capsys.readouterr().out.split())
    assert "trial abc123" in line and "[1 of 3 trials done]" in line
    for text in shown:
        assert text in line
    for text in hidden:
        assert text not in line
