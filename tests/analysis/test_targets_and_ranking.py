"""target_score, verdicts and the ranking on constructed results."""

from __future__ import annotations

import math

import pytest

from analysis.ranking import TrialRecord, rank_trials
from analysis.targets import NSL, TARGET_SETS, Target, target_score, targets_met, verdicts

ACC = Target("val/acc", 0.85)
LOSS = Target("val/loss", 0.5, direction="min")


def test_target_score_is_one_at_the_threshold_and_rewards_surplus_less():
    assert target_score({"val/acc": 0.85}, [ACC]) == pytest.approx(1.0)
    assert target_score({"val/acc": 0.425}, [ACC]) == pytest.approx(0.5)
    above = target_score({"val/acc": 0.935}, [ACC])
    assert 1.0 < above < 1.1  # 10% surplus counts a quarter
    assert target_score({"val/loss": 0.25}, [LOSS]) == pytest.approx(1.25)
    # A missed target cannot be bought back with surplus on another one.
    assert target_score({"val/acc": 0.85 * 1.4, "val/loss": 1.0}, [ACC, LOSS]) < 1.0


def test_missing_or_nan_metrics_score_zero_and_miss():
    assert target_score({}, [ACC]) == 0.0
    assert target_score({"val/acc": math.nan}, [ACC]) == 0.0
    assert targets_met({"val/acc": math.nan}, [ACC]) == 0


def test_verdicts_carry_the_source_sentence():
    (verdict,) = verdicts({"val/acc": 0.9}, NSL.targets)
    assert verdict["met"] and verdict["threshold"] == 0.85
    assert "85-95%" in verdict["source"]
    assert TARGET_SETS["nsl"] is NSL


def _record(trial_id, acc, epochs, status="done"):
    return TrialRecord(trial_id, "progressive", {}, {"val/acc": acc, "epoch": epochs}, status)


def test_ranking_orders_by_targets_then_score_then_epochs_and_fails_last():
    records = [
        _record("a", 0.80, 10),
        _record("b", 0.90, 30),
        _record("c", 0.90, 10),
        _record("d", 0.99, 5, status="failed"),
        _record("e", 0.86, 7),
        _record("f", math.nan, 3),
    ]
    ranked = rank_trials(records, [ACC])
    assert [r.record.trial_id for r in ranked] == ["c", "b", "e", "a", "f", "d"]
    assert [r.rank for r in ranked] == [1, 2, 3, 4, 5, 6]
    assert ranked[0].targets_met == 1 and ranked[3].targets_met == 0
    assert ranked[-1].failed


def test_ranking_ties_are_deterministic():
    records = [_record("z", 0.9, 10), _record("y", 0.9, 10)]
    assert [r.record.trial_id for r in rank_trials(records, [ACC])] == ["y", "z"]
