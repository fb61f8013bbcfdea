"""The ranking table's rows, built once from the ranked trials; the terminal (``phasetune
results``) and the report render them, each in its own markup, with one number format."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from analysis.pareto import pareto_front
from analysis.ranking import RankedTrial
from analysis.recipes import plan_summary, plan_tasks
from analysis.targets import Target

__all__ = ["RankingRow", "RankingTable", "format_number", "ranking_table_rows"]

#: Tasks whose forgetting a multi-task plan reports, in the order columns show them.
_FORGETTING_ORDER = ("seg", "det", "cls")


@dataclasses.dataclass(frozen=True)
class RankingRow:
    """One trial of the ranking, its values unformatted.

    Attributes:
        metrics: The final value of each target metric (``RankingTable.metrics``).
        forgetting: ``forgetting/<task>`` for each of ``RankingTable.forgetting_tasks``.
        status: The trial's status, or ``failed: <why>``.
        on_front: On the Pareto front of the target metrics (several metrics only).
    """

    rank: int
    trial_id: str
    strategy: str
    recipe: str
    metrics: tuple[float | None, ...]
    forgetting: tuple[float | None, ...]
    targets_met: int
    targets: int
    target_score: float
    epochs: int
    status: str
    on_front: bool


@dataclasses.dataclass(frozen=True)
class RankingTable:
    """Rows best first, and the columns they fill.

    Attributes:
        metrics: The target metrics, each once, in the targets' order.
        forgetting_tasks: Tasks trained by some multi-task plan among the trials (their
            forgetting means something only there).
        front: Ids of the trials on the Pareto front of the target metrics, over all
            the trials (none for one metric).
    """

    metrics: tuple[str, ...]
    forgetting_tasks: tuple[str, ...]
    front: frozenset[str]
    rows: tuple[RankingRow, ...]

    @property
    def multi_metric(self) -> bool:
        return len(self.metrics) > 1


def ranking_table_rows(
    ranked: Sequence[RankedTrial], targets: Sequence[Target], limit: int | None = None
) -> RankingTable:
    """The first ``limit`` (None: all) ranked trials as rows; the front and the forgetting
    columns are decided over all of them."""
    metrics = tuple(dict.fromkeys(target.metric for target in targets))
    tasks = [plan_tasks(item.record.phase_plan) for item in ranked]
    forgetting_tasks = tuple(
        t for t in _FORGETTING_ORDER if any(t in s for s in tasks if len(s) > 1)
    )
    front: frozenset[str] = frozenset()
    if len(metrics) > 1:
        front = pareto_front([item.record for item in ranked], targets)
    rows = []
    for item in ranked[:limit]:
        record = item.record
        rows.append(
            RankingRow(
                rank=item.rank,
                trial_id=record.trial_id,
                strategy=record.strategy,
                recipe=plan_summary(record.phase_plan),
                metrics=tuple(record.metrics.get(name) for name in metrics),
                forgetting=tuple(record.metrics.get(f"forgetting/{t}") for t in forgetting_tasks),
                targets_met=item.targets_met,
                targets=len(targets),
                target_score=item.target_score,
                epochs=record.epochs,
                status=f"failed: {record.error}" if record.error else record.status,
                on_front=record.trial_id in front,
            )
        )
    return RankingTable(metrics, forgetting_tasks, front, tuple(rows))


def format_number(value: Any) -> str:
    """A metric as the ranking shows it: 4 decimals, or 3 significant digits below 0.01;
    ``-`` for none."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.3g}" if value and abs(value) < 1e-2 else f"{value:.4f}"
    return str(value)
