"""The study hears what happened to each trial: complete, pruned or failed."""

from __future__ import annotations

import math

import pytest
from optuna.trial import TrialState

from search.study import trial_state


@pytest.mark.parametrize(
    ("result", "error", "state", "value"),
    [
        ({"target_score": 0.9, "plan_complete": 1}, False, TrialState.COMPLETE, 0.9),
        ({"target_score": 0.4, "plan_complete": 0}, False, TrialState.PRUNED, None),
        ({"target_score": math.nan, "plan_complete": 1}, False, TrialState.FAIL, None),
        ({"target_score": 0.9, "plan_complete": 0}, True, TrialState.FAIL, None),
        (None, True, TrialState.FAIL, None),
        ({"epoch": 1}, False, TrialState.FAIL, None),
    ],
)
def test_trial_state(result, error, state, value):
    got_state, got_value, reason = trial_state(result, "target_score", error)
    assert got_state == state
    assert got_value == value
    assert (reason is None) == (state != TrialState.FAIL)
