"""The Pareto front of a search over several metrics.

``target_score`` folds every target into one number, which is what the search
optimises; a multi-task study also wants to see the trade-offs that number hides
(a trial best at segmentation against one best at detection). The front names the
trials that no other trial beats on every per-task metric at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from analysis.ranking import TrialRecord
from analysis.targets import Target

__all__ = ["pareto_front"]


def pareto_front(records: Sequence[TrialRecord], objectives: Sequence[Target]) -> frozenset[str]:
    """Trial ids of the non-dominated trials over ``objectives``.

    Only trials that did not fail and report a finite value for every objective's
    metric take part. A trial dominates another when it is at least as good on
    every objective (``>=`` for ``max`` targets, ``<=`` for ``min``) and strictly
    better on one; thresholds play no part. Trials with identical vectors do not
    dominate each other, so all of them stay on the front.

    Args:
        records: The trials, e.g. from :func:`analysis.results.trial_records`.
        objectives: One target per metric, e.g. ``TARGET_SETS["multitask"].targets``.

    Raises:
        ValueError: ``objectives`` is empty.
    """
    if not objectives:
        raise ValueError("pareto_front: give at least one objective")
    points = {
        record.trial_id: vector
        for record in records
        if record.status != "failed" and (vector := _vector(record.metrics, objectives)) is not None
    }
    return frozenset(
        trial_id
        for trial_id, vector in points.items()
        if not any(_dominates(other, vector) for other in points.values())
    )


def _vector(
    metrics: Mapping[str, object], objectives: Sequence[Target]
) -> tuple[float, ...] | None:
    """Metric values signed so that larger is better; None when one is missing or not finite."""
    vector = []
    for target in objectives:
        value = metrics.get(target.metric)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        vector.append(float(value) if target.direction == "max" else -float(value))
    return tuple(vector)


def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x >= y for x, y in zip(a, b, strict=True)) and a != b
