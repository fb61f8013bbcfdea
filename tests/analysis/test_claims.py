"""The documents' claims decided on constructed results whose answer is known."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from analysis.claims import (
    CLAIMS,
    NOT_TESTED,
    REFUTED,
    SUPPORTED,
    ClaimVerdict,
    check_claims,
    claims_table,
)
from analysis.ranking import TrialRecord

TASKS = ["seg", "det", "cls"]
#: Finished experiments to check as well, given by hand (they take minutes to make):
#: their folders, separated by the path separator, in PHASETUNE_TEST_EXPERIMENTS.
REAL_EXPERIMENTS = [
    path for path in os.environ.get("PHASETUNE_TEST_EXPERIMENTS", "").split(os.pathsep) if path
]
#: The folder of the two source documents, where it is given.
SOURCES = os.environ.get("PHASETUNE_TEST_SOURCES", "")


def _record(
    trial_id: str,
    strategy: str,
    metrics: Mapping[str, float],
    *,
    status: str = "done",
    plan: Mapping[str, Any] | None = None,
) -> TrialRecord:
    if plan is not None:
        plan = {"strategy": strategy, **plan}
    return TrialRecord(trial_id, strategy, {}, dict(metrics), status, plan)


def _verdict(verdicts: Sequence[ClaimVerdict], claim_id: str) -> ClaimVerdict:
    (found,) = [v for v in verdicts if v.claim.id == claim_id]
    return found


def _phase(name: str, tasks: list[str], **extra: Any) -> dict[str, Any]:
    phase = {
        "name": name,
        "epochs": 2,
        "trainable": "all",
        "tasks": tasks,
        "weighting": {"method": "equal", "params": {}},
        "ewc": None,
        "lr": 1e-3,
        "lr_schedule": {"kind": "constant"},
    }
    phase.update(extra)
    return phase


def _joint_plan(method: str = "loss_ratio", **joint: Any) -> dict[str, Any]:
    """Warmup, joint (phase 2) and finetune, as the joint strategy expands them."""
    weighting = {"method": method, "params": {}}
    return {
        "phases": [
            _phase("warmup", TASKS),
            _phase("joint", TASKS, weighting=weighting, **joint),
            _phase("finetune", TASKS),
        ]
    }


def _sequential_plan(ewc: bool = False) -> dict[str, Any]:
    anchor = {"strength": 1000.0, "fisher_batches": 20} if ewc else None
    return {"phases": [_phase("task/det", ["det"]), _phase("task/cls", ["cls"], ewc=anchor)]}


def _transfer(trial_id: str, strategy: str, acc: float, **kwargs: Any) -> TrialRecord:
    return _record(trial_id, strategy, {"val/acc": acc, "train/acc": acc, "epoch": 10}, **kwargs)


def _transfer_gap(progressive: float, single: float) -> ClaimVerdict:
    records = [
        _transfer("p1", "progressive", progressive),
        _transfer("p2", "progressive", 0.60),
        _transfer("s1", "single_phase", single),
        _transfer("s2", "single_phase", 0.50),
    ]
    return _verdict(check_claims(records), "progressive_gain")


def test_progressive_better_by_3_points_is_supported_by_the_best_trials():
    verdict = _transfer_gap(0.88, 0.85)
    assert verdict.verdict == SUPPORTED
    assert verdict.numbers["best_gap_pts"] == pytest.approx(3.0)
    assert verdict.numbers["progressive_median_pct"] == pytest.approx(74.0)
    assert "within the claimed 2-5" in verdict.detail and "Best trials decide" in verdict.detail


@pytest.mark.parametrize(
    ("progressive", "single", "verdict", "reason"),
    [
        (0.855, 0.85, REFUTED, "below the claimed 2-5"),
        (0.85, 0.86, REFUTED, "single-phase is as good or better"),
        (0.95, 0.85, SUPPORTED, "above the claimed 2-5"),
    ],
)
def test_progressive_gap_rule(progressive, single, verdict, reason):
    found = _transfer_gap(progressive, single)
    assert found.verdict == verdict
    assert reason in found.detail


def test_transfer_claims_without_single_phase_trials_are_not_tested():
    records = [_transfer("p1", "progressive", 0.9)]
    verdicts = check_claims(records)
    for claim_id in ("progressive_gain", "single_phase_accuracy", "progressive_overfits_less"):
        found = _verdict(verdicts, claim_id)
        assert found.verdict == NOT_TESTED
        assert "no single_phase trial in this experiment" in found.detail
    assert _verdict(verdicts, "progressive_accuracy").verdict == SUPPORTED


def test_failed_and_stopped_trials_are_ignored():
    records = [
        _transfer("p1", "progressive", 0.88),
        _transfer("p2", "progressive", 0.99, status="failed"),
        _transfer("p3", "progressive", 0.97, status="stopped"),
        _transfer("s1", "single_phase", 0.85, status="early_stopped"),
        _transfer("s2", "single_phase", 0.99, status="failed"),
    ]
    verdict = _verdict(check_claims(records), "progressive_gain")
    assert verdict.numbers["progressive_best_pct"] == pytest.approx(88.0)
    assert verdict.numbers["single_phase_best_pct"] == pytest.approx(85.0)
    assert "1 of 3 progressive trials ran their plan" in verdict.detail
    only_failed = [
        _transfer("p1", "progressive", 0.9),
        _transfer("s", "single_phase", 0.9, status="failed"),
    ]
    found = _verdict(check_claims(only_failed), "progressive_gain")
    assert found.verdict == NOT_TESTED and "ran its plan" in found.detail


def test_accuracy_ranges_are_literal():
    records = [_transfer("p", "progressive", 0.88), _transfer("s", "single_phase", 0.93)]
    verdicts = check_claims(records)
    assert _verdict(verdicts, "progressive_accuracy").verdict == SUPPORTED
    single = _verdict(verdicts, "single_phase_accuracy")
    assert single.verdict == REFUTED and "above the claimed 80-90%" in single.detail


def test_overfitting_compares_median_train_over_val_gaps():
    def trial(trial_id, strategy, train, val):
        return _record(trial_id, strategy, {"train/acc": train, "val/acc": val})

    less = [trial("p", "progressive", 0.82, 0.80), trial("s", "single_phase", 0.95, 0.80)]
    assert _verdict(check_claims(less), "progressive_overfits_less").verdict == SUPPORTED
    # Val above train is no overfitting at all: neither strategy overfits less.
    neither = [trial("p", "progressive", 0.70, 0.80), trial("s", "single_phase", 0.60, 0.80)]
    found = _verdict(check_claims(neither), "progressive_overfits_less")
    assert found.verdict == REFUTED
    assert found.numbers["single_phase_median_gap_pts"] == pytest.approx(-20.0)


def _epochs(curves: Mapping[str, Sequence[Mapping[str, Any]]]) -> pa.Table:
    rows = []
    for trial_id, rows_of_trial in curves.items():
        for epoch, values in enumerate(rows_of_trial, start=1):
            rows.append({"trial_id": trial_id, "epoch": epoch, **values})
    return pa.Table.from_pylist(rows)


def test_stability_is_the_largest_epoch_to_epoch_fall():
    records = [_transfer("p", "progressive", 0.8), _transfer("s", "single_phase", 0.8)]
    epochs = _epochs(
        {
            "p": [{"val/acc": v} for v in (0.5, 0.6, 0.7, 0.8)],
            "s": [{"val/acc": v} for v in (0.5, 0.7, 0.62, 0.8)],
        }
    )
    found = _verdict(check_claims(records, epochs), "progressive_more_stable")
    assert found.verdict == SUPPORTED
    assert found.numbers["single_phase_median_drop_pts"] == pytest.approx(8.0)
    assert _verdict(check_claims(records), "progressive_more_stable").verdict == NOT_TESTED


def _sequential(trial_id: str, det_forgetting: float, *, ewc: bool = False) -> TrialRecord:
    metrics = {
        "forgetting/det": det_forgetting,
        "best/det": 0.55,
        "forgetting/cls": 0.0,
        "best/cls": 0.8,
        "val/det_map50": 0.55 - det_forgetting,
        "val/cls_acc": 0.8,
    }
    return _record(trial_id, "sequential", metrics, plan=_sequential_plan(ewc))


def test_sequential_forgetting_above_90_percent_is_supported():
    found = _verdict(check_claims([_sequential("a", 0.5)]), "sequential_forgetting")
    assert found.verdict == SUPPORTED
    # Only det trained before the last phase: cls, trained last, does not dilute it.
    assert found.numbers["median_drop_pct"] == pytest.approx(100 * 0.5 / 0.55, abs=0.01)


def test_sequential_forgetting_below_90_percent_is_refuted():
    found = _verdict(check_claims([_sequential("a", 0.2)]), "sequential_forgetting")
    assert found.verdict == REFUTED
    assert found.numbers["median_drop_pct/det"] == pytest.approx(36.36, abs=0.01)
    assert "36.4%" in found.detail


def test_ewc_ineffective_compares_forgetting_with_and_without():
    same = [_sequential("a", 0.5, ewc=True), _sequential("b", 0.5)]
    assert _verdict(check_claims(same), "ewc_ineffective").verdict == SUPPORTED
    helps = [_sequential("a", 0.1, ewc=True), _sequential("b", 0.5)]
    assert _verdict(check_claims(helps), "ewc_ineffective").verdict == REFUTED
    found = _verdict(check_claims([_sequential("b", 0.5)]), "ewc_ineffective")
    assert found.verdict == NOT_TESTED and "with EWC" in found.detail


def _joint(
    trial_id: str,
    score: float,
    *,
    forgetting: float = 0.0,
    plan: Mapping[str, Any] | None = None,
    status: str = "done",
) -> TrialRecord:
    metrics: dict[str, float] = {
        "val/cls_acc": score,
        "val/seg_miou": score,
        "val/det_map50": score,
    }
    for task in TASKS:
        metrics[f"forgetting/{task}"] = forgetting
        metrics[f"best/{task}"] = score + forgetting
    return _record(trial_id, "joint", metrics, plan=plan or _joint_plan(), status=status)


def test_joint_without_forgetting_prevents_it():
    records = [_joint("a", 0.8), _joint("b", 0.7, forgetting=0.001)]
    assert _verdict(check_claims(records), "joint_no_forgetting").verdict == SUPPORTED
    forgets = [_joint("a", 0.4, forgetting=0.4)]
    assert _verdict(check_claims(forgets), "joint_no_forgetting").verdict == REFUTED


def test_joint_beats_sequential_by_mean_task_metric():
    records = [_joint("j", 0.8), _sequential("s", 0.5)]
    found = _verdict(check_claims(records), "joint_beats_sequential")
    assert found.verdict == SUPPORTED and found.numbers["best_gap_pts"] > 30


def test_reported_weights_are_refuted_from_the_document_alone():
    for records in ([], [_joint("a", 0.8)]):
        found = _verdict(check_claims(records), "reported_weights")
        assert found.verdict == REFUTED
        computed = [found.numbers[f"computed/{task}"] for task in TASKS]
        assert computed == pytest.approx([1.54, 0.76, 1.08], abs=0.01)
        assert "[1.54, 0.76, 1.08]" in found.detail


def _weights(seg: float, det: float, cls: float, phase: int) -> dict[str, float]:
    return {"phase": phase, "weight/seg": seg, "weight/det": det, "weight/cls": cls}


def test_loss_ratio_weights_balanced_only_in_the_joint_phase():
    records = [_joint("a", 0.8)]
    balanced = _epochs(
        {
            "a": [
                _weights(1.0, 1.0, 1.0, 1),
                _weights(0.9, 1.2, 0.95, 2),
                _weights(0.85, 1.3, 0.9, 2),
                _weights(0.1, 5.0, 1.0, 3),  # the finetune phase: not the joint phase
            ]
        }
    )
    found = _verdict(check_claims(records, balanced), "loss_ratio_balanced")
    assert found.verdict == SUPPORTED
    assert found.numbers["median_max_ratio"] == pytest.approx(1.3 / 0.85, abs=1e-3)
    skewed = _epochs({"a": [_weights(1.0, 1.0, 1.0, 1), _weights(0.5, 2.0, 1.0, 2)]})
    assert _verdict(check_claims(records, skewed), "loss_ratio_balanced").verdict == REFUTED
    equal_only = [_joint("a", 0.8, plan=_joint_plan("equal"))]
    found = _verdict(check_claims(equal_only, balanced), "loss_ratio_balanced")
    assert found.verdict == NOT_TESTED


def test_dynamic_weighting_helps_compares_loss_ratio_with_equal():
    records = [_joint("a", 0.8), _joint("b", 0.6, plan=_joint_plan("equal"))]
    assert _verdict(check_claims(records), "dynamic_weighting_helps").verdict == SUPPORTED
    records = [_joint("a", 0.6), _joint("b", 0.8, plan=_joint_plan("equal"))]
    assert _verdict(check_claims(records), "dynamic_weighting_helps").verdict == REFUTED


def _task_curve(values: Sequence[float]) -> list[dict[str, float]]:
    return [{"val/cls_acc": v, "val/seg_miou": v, "val/det_map50": v} for v in values]


@pytest.mark.parametrize(
    ("curve", "verdict"),
    [
        ([0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75], SUPPORTED),  # best at the last epoch
        ([0.3, 0.6, 0.7, 0.7, 0.7, 0.69, 0.7, 0.7], REFUTED),  # plateau from epoch 3
    ],
)
def test_still_improving_at_the_end(curve, verdict):
    records = [_joint("a", curve[-1])]
    found = _verdict(
        check_claims(records, _epochs({"a": _task_curve(curve)})), "more_epochs_needed"
    )
    assert found.verdict == verdict
    assert _verdict(check_claims(records), "more_epochs_needed").verdict == NOT_TESTED


def test_task_losses_decrease_under_joint_training():
    records = [_joint("a", 0.8)]
    falling = [{f"train/loss/{t}": loss for t in TASKS} for loss in (2.0, 1.5, 1.0)]
    found = _verdict(check_claims(records, _epochs({"a": falling})), "task_losses_decrease")
    assert found.verdict == SUPPORTED
    rising = [dict(row, **{"train/loss/det": 3.0}) for row in falling[1:]]
    found = _verdict(
        check_claims(records, _epochs({"a": falling[:1] + rising})), "task_losses_decrease"
    )
    assert found.verdict == REFUTED


def test_fixed_lr_compares_constant_with_decaying_plans():
    cosine = _joint_plan(lr_schedule={"kind": "cosine", "final_lr": 1e-5})
    records = [_joint("fixed", 0.6), _joint("decayed", 0.7, plan=cosine)]
    found = _verdict(check_claims(records), "fixed_lr_limits")
    assert found.verdict == SUPPORTED and found.numbers["fixed_best_lr"] == pytest.approx(1e-3)
    found = _verdict(check_claims([_joint("fixed", 0.6)]), "fixed_lr_limits")
    assert found.verdict == NOT_TESTED and "decaying" in found.detail


def test_every_claim_gets_one_json_ready_verdict():
    verdicts = check_claims(
        [_joint("a", 0.8), _sequential("s", 0.5), _transfer("p", "progressive", 0.9)]
    )
    assert [v.claim.id for v in verdicts] == [claim.id for claim in CLAIMS]
    assert len({claim.id for claim in CLAIMS}) == len(CLAIMS)
    rows = claims_table(verdicts)
    json.dumps(rows, allow_nan=False)
    assert {"id", "document", "statement", "source", "verdict", "detail", "numbers"} <= set(rows[0])
    assert all(v.verdict in (SUPPORTED, REFUTED, NOT_TESTED) for v in verdicts)
    assert all(claim.document in ("transfer", "multitask") for claim in CLAIMS)


@pytest.mark.skipif(
    not SOURCES or not os.path.isdir(SOURCES),
    reason="PHASETUNE_TEST_SOURCES does not name the source documents' folder",
)
def test_sources_are_quoted_verbatim():
    texts = {
        "transfer": Path(SOURCES, "003_2ea3668c004f7e37.txt").read_text(encoding="utf-8"),
        "multitask": Path(SOURCES, "000_2f3bf6fc931abe7c.txt").read_text(encoding="utf-8"),
    }
    for claim in CLAIMS:
        assert claim.source in texts[claim.document], claim.id


@pytest.mark.skipif(
    not REAL_EXPERIMENTS, reason="PHASETUNE_TEST_EXPERIMENTS names no finished experiment"
)
@pytest.mark.parametrize("experiment", REAL_EXPERIMENTS or ["-"])
def test_real_experiment_gets_a_verdict_for_every_claim(experiment):
    # A folder given by hand that is not an experiment is a mistake, not a skip.
    assert os.path.isdir(f"{experiment}/tune"), f"{experiment} holds no finished experiment"
    from analysis.results import load_results, trial_records

    tables = load_results(experiment)
    verdicts = check_claims(trial_records(tables.trials), tables.epochs)
    assert len(verdicts) == len(CLAIMS)
    assert all(v.verdict in (SUPPORTED, REFUTED, NOT_TESTED) and v.detail for v in verdicts)
    assert sum(v.verdict != NOT_TESTED for v in verdicts) > 1
    json.dumps(claims_table(verdicts), allow_nan=False)
