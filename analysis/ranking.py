"""Ranking of trials: targets met, then target_score, then epochs used."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from analysis.targets import Target, target_score, targets_met
from trainables.phases import PhasePlan

__all__ = ["RAN_PLAN", "STATUSES", "RankedTrial", "TrialRecord", "rank_trials", "ranking_json"]

STATUSES = ("done", "early_stopped", "stopped", "failed")
#: Statuses of trials that ran their whole plan: their final metrics are those of a
#: finished recipe, not of a model a scheduler stopped halfway.
RAN_PLAN = ("done", "early_stopped")


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """What one trial of a search produced.

    Attributes:
        trial_id: Tune's trial id.
        strategy: Strategy name.
        params: The strategy's sampled parameters.
        metrics: The trial's last reported metrics (its final model).
        status: ``done`` (ran its plan), ``early_stopped`` (its own early
            stopping ended it), ``stopped`` (the scheduler stopped it) or ``failed``.
        plan: The expanded phase plan as results store it (plain data).
        error: Why a failed trial failed.
        phase_plan: ``plan`` read into a ``PhasePlan`` once, here: what the analysis
            reads.
    """

    trial_id: str
    strategy: str
    params: Mapping[str, Any]
    metrics: Mapping[str, Any]
    status: str
    plan: Mapping[str, Any] | None = None
    error: str | None = None
    phase_plan: PhasePlan | None = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        typed = PhasePlan.from_dict(self.plan) if self.plan else None
        object.__setattr__(self, "phase_plan", typed)

    @property
    def epochs(self) -> int:
        return int(self.metrics.get("epoch", 0) or 0)


@dataclasses.dataclass(frozen=True)
class RankedTrial:
    rank: int
    record: TrialRecord
    targets_met: int
    target_score: float

    @property
    def failed(self) -> bool:
        return self.record.status == "failed"


def rank_trials(records: Iterable[TrialRecord], targets: Sequence[Target]) -> list[RankedTrial]:
    """Order trials best first; failed trials (and NaN scores) come last.

    Scores are recomputed from each trial's final metrics with the same function
    the engine reported, so a changed target set re-ranks old results correctly.
    Ties fall to fewer epochs, then to the trial id, so the order is deterministic.
    """
    scored = []
    for record in records:
        met = targets_met(record.metrics, targets)
        score = target_score(record.metrics, targets)
        usable = record.status != "failed" and math.isfinite(score)
        key = (0 if usable else 1, -met, -score if usable else 0.0, record.epochs, record.trial_id)
        scored.append((key, record, met, score))
    scored.sort(key=lambda item: item[0])
    return [
        RankedTrial(rank=i + 1, record=record, targets_met=met, target_score=score)
        for i, (_, record, met, score) in enumerate(scored)
    ]


def ranking_json(ranked: list[RankedTrial]) -> str:
    """``ranking.json``: every trial, best first, with its parameters and metrics."""
    rows = [
        {
            "rank": item.rank,
            "trial_id": item.record.trial_id,
            "strategy": item.record.strategy,
            "status": item.record.status,
            "targets_met": item.targets_met,
            "target_score": item.target_score,
            "epochs": item.record.epochs,
            "params": item.record.params,
            "metrics": {
                k: v for k, v in item.record.metrics.items() if isinstance(v, (int, float, str))
            },
            "error": item.record.error,
        }
        for item in ranked
    ]
    return json.dumps(rows, indent=2, default=str) + "\n"
