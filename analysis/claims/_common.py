"""What every family of evidence shares: an experiment's trials, per-trial numbers, and the
comparison of two groups of trials by their best and median.

The family modules (``_transfer``, ``_forgetting``, ``_joint_training``) decide their
claims with these, so a rule such as "a gap that names no size must reach
:data:`MIN_GAP_POINTS`" is written once for all of them.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from analysis.claims._catalogue import REFUTED, SUPPORTED
from analysis.ranking import RAN_PLAN, TrialRecord
from trainables.metric_names import TASK_METRICS as TASK_METRIC_NAMES

__all__ = [
    "MEAN_TASK_METRIC",
    "MIN_GAP_POINTS",
    "TASK_METRICS",
    "Experiment",
    "Outcome",
    "Score",
    "best_first",
    "best_numbers",
    "better_by",
    "compare_best",
    "final_metric",
    "gap_detail",
    "median_of",
    "percent",
    "reported_tasks",
    "task_mean",
]

#: Smallest difference that counts as "better" where a claim names no size: below it,
#: trials of one search differ by sampling noise as much as by strategy.
MIN_GAP_POINTS = 1.0

#: The validation metric that stands for each task (as the engine reports it).
TASK_METRICS = tuple(TASK_METRIC_NAMES.values())

#: What a check returns: the verdict, its detail, and the numbers behind it.
Outcome = tuple[str, str, dict[str, float]]


@dataclasses.dataclass(frozen=True)
class Score:
    """A per-trial number to compare strategies by (higher is better)."""

    name: str
    of: Callable[[TrialRecord], float | None]


@dataclasses.dataclass(frozen=True)
class Experiment:
    """The records, and the per-epoch rows of trials that ran their plan (None: no table)."""

    records: tuple[TrialRecord, ...]
    curves: Mapping[str, list[dict[str, Any]]] | None

    def trials(self, strategy: str) -> tuple[list[TrialRecord], str | None]:
        """Trials of ``strategy`` that ran their plan, or why there are none."""
        every = [r for r in self.records if r.strategy == strategy]
        if not every:
            return [], f"no {strategy} trial in this experiment"
        ran = [r for r in every if r.status in RAN_PLAN]
        if not ran:
            return [], f"no {strategy} trial ran its plan ({len(every)} stopped or failed)"
        return ran, None

    def ran(self, strategy: str) -> str:
        every = [r for r in self.records if r.strategy == strategy]
        ran = sum(r.status in RAN_PLAN for r in every)
        return f"{ran} of {len(every)} {strategy} trials ran their plan"


def final_metric(record: TrialRecord, name: str) -> float | None:
    value = record.metrics.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def task_mean(values: Mapping[str, Any]) -> float | None:
    present = [
        float(values[m])
        for m in TASK_METRICS
        if isinstance(values.get(m), (int, float)) and math.isfinite(values[m])
    ]
    return sum(present) / len(present) if present else None


MEAN_TASK_METRIC = Score(
    "mean of val/cls_acc, val/seg_miou, val/det_map50", lambda r: task_mean(r.metrics)
)


def percent(value: float) -> float:
    return round(100.0 * value, 2)


def best_first(records: Sequence[TrialRecord], score: Score) -> list[tuple[float, TrialRecord]]:
    """Trials with a score, best first (ties to the trial id)."""
    pairs = [(value, r) for r in records if (value := score.of(r)) is not None]
    return sorted(pairs, key=lambda pair: (-pair[0], pair[1].trial_id))


def median_of(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def reported_tasks(record: TrialRecord) -> list[str]:
    return sorted(
        name.split("/", 1)[1] for name in record.metrics if name.startswith("forgetting/")
    )


def compare_best(
    exp: Experiment, first: str, second: str, score: Score
) -> tuple[dict[str, float] | None, str]:
    """Best and median ``score`` of two strategies' trials with who ran, or why not tested.

    The numbers are in percent, the gaps (``first`` minus ``second``) in points.
    """
    groups = []
    for strategy in (first, second):
        trials, missing = exp.trials(strategy)
        if missing:
            return None, missing
        scored = best_first(trials, score)
        if not scored:
            return None, f"no {strategy} trial that ran its plan reports {score.name}"
        groups.append(scored)
    numbers = best_numbers(groups[0], groups[1], (first, second))
    return numbers, f"{exp.ran(first)}, {exp.ran(second)}"


def best_numbers(
    first: list[tuple[float, TrialRecord]],
    second: list[tuple[float, TrialRecord]],
    labels: tuple[str, str],
) -> dict[str, float]:
    a, b = labels
    numbers = {
        f"{a}_best_pct": percent(first[0][0]),
        f"{b}_best_pct": percent(second[0][0]),
        f"{a}_median_pct": percent(median_of([v for v, _ in first])),
        f"{b}_median_pct": percent(median_of([v for v, _ in second])),
        f"{a}_trials": float(len(first)),
        f"{b}_trials": float(len(second)),
    }
    numbers["best_gap_pts"] = round(numbers[f"{a}_best_pct"] - numbers[f"{b}_best_pct"], 2)
    numbers["median_gap_pts"] = round(numbers[f"{a}_median_pct"] - numbers[f"{b}_median_pct"], 2)
    return numbers


def better_by(
    gap: float, other: str, claimed: tuple[float, float] | None = None
) -> tuple[str, str]:
    """Verdict and reason for a best-trial gap (points) against what the claim needs.

    A claim naming a range of gaps needs its lower bound (a gap above the range still
    supports it); one naming none needs :data:`MIN_GAP_POINTS`.
    """
    if gap <= 0:
        return REFUTED, f"{other} is as good or better"
    needed = claimed[0] if claimed else MIN_GAP_POINTS
    verdict = SUPPORTED if gap >= needed else REFUTED
    if claimed:
        where = "above" if gap > claimed[1] else "within" if gap >= needed else "below"
        return verdict, f"the gap is {where} the claimed {claimed[0]:g}-{claimed[1]:g} points"
    where = "at least" if gap >= needed else "below"
    return verdict, f"the gap is {where} the {needed:g} point needed"


def gap_detail(numbers: dict[str, float], labels: tuple[str, str], names: tuple[str, str]) -> str:
    a, b = labels
    return (
        f"best trials {names[0]} {numbers[f'{a}_best_pct']:.1f}% vs {names[1]}"
        f" {numbers[f'{b}_best_pct']:.1f}% ({numbers['best_gap_pts']:+.1f} points; medians"
        f" {numbers[f'{a}_median_pct']:.1f}% vs {numbers[f'{b}_median_pct']:.1f}%,"
        f" {numbers['median_gap_pts']:+.1f})"
    )
