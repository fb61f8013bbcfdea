"""Trial schedulers: which trials to stop early, and when to compare them."""

from __future__ import annotations

from typing import Any

from search.config import SearchConfig

__all__ = ["SCHEDULERS", "build_scheduler"]

SCHEDULERS = ("asha", "phase_asha", "median", "fifo")


def build_scheduler(search: SearchConfig, max_t: int) -> Any:
    """The trial scheduler ``search.scheduler`` names; ``max_t`` is the longest plan in epochs."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

    if search.scheduler == "asha":
        return ASHAScheduler(
            metric="target_score",
            mode="max",
            time_attr="epoch",
            max_t=max_t,
            grace_period=min(search.grace_period, max_t),
            reduction_factor=search.reduction_factor,
        )
    if search.scheduler == "phase_asha":
        # ASHA over the share of each trial's own plan that is done, so
        # a trial still in its frozen phase is only compared with trials at the same
        # point of their plans, not with one already fine-tuning everything.
        return ASHAScheduler(
            metric="target_score",
            mode="max",
            time_attr="plan_progress",
            max_t=1.0,
            grace_period=search.grace_fraction,
            reduction_factor=search.reduction_factor,
        )
    if search.scheduler == "median":
        return MedianStoppingRule(
            metric="target_score",
            mode="max",
            time_attr="epoch",
            grace_period=search.grace_period,
            min_samples_required=3,
        )
    return FIFOScheduler()
