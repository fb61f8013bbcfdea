"""What every report section reads, and the small formatting helpers they share.

The sections receive one :class:`_Context` rather than a loose set of arguments
so that each can be written, and read, without knowing what the others need.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from analysis import plots
from analysis.ranking import RAN_PLAN, RankedTrial, TrialRecord
from analysis.recipes import plan_summary
from analysis.targets import Target
from trainables.phases import PhasePlan

__all__ = [
    "_Context",
    "_finished_scores",
    "_finite",
    "_quote",
    "_recipe",
    "_records",
    "_slug",
]


@dataclasses.dataclass(frozen=True)
class _Context:
    """What every section reads: the ranked trials, their curves, where figures go."""

    name: str
    directory: str
    out: Path
    targets: tuple[Target, ...]
    ranked: list[RankedTrial]
    curves: plots.Curves
    num_groups: int

    @property
    def metrics(self) -> list[str]:
        return list(dict.fromkeys(target.metric for target in self.targets))

    @property
    def multi_metric(self) -> bool:
        return len(self.metrics) > 1

    @property
    def strategies(self) -> list[str]:
        """Strategies in the order of their best trial's rank."""
        return list(dict.fromkeys(item.record.strategy for item in self.ranked))

    def best_of(self, strategy: str) -> RankedTrial:
        return next(item for item in self.ranked if item.record.strategy == strategy)

    def trials_of(self, strategy: str) -> list[RankedTrial]:
        return [item for item in self.ranked if item.record.strategy == strategy]

    @property
    def colors(self) -> dict[str, str]:
        return plots.strategy_colors(self.strategies)

    def image(self, name: str) -> Path:
        return self.out / f"{_slug(name)}.png"


def _recipe(plan: PhasePlan | None) -> str:
    return plan_summary(plan)


def _finished_scores(trials: Sequence[RankedTrial]) -> list[float]:
    """Scores of the trials that ran their whole plan (or stopped early by their own rule)."""
    return [
        item.target_score
        for item in trials
        if item.record.status in RAN_PLAN and math.isfinite(item.target_score)
    ]


def _quote(text: str) -> str:
    return f"“{text}”" if text else "-"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _records(ranked: Sequence[RankedTrial]) -> list[TrialRecord]:
    return [item.record for item in ranked]
