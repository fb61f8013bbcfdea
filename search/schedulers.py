"""Trial schedulers: which trials to stop early, and when to compare them."""

from __future__ import annotations

import copy
from typing import Any

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

from search.config import SearchConfig

__all__ = ["SCHEDULERS", "StrategyASHAScheduler", "build_scheduler"]

SCHEDULERS = ("asha", "strategy_asha", "phase_asha", "median", "fifo")


class StrategyASHAScheduler(ASHAScheduler):
    """ASHA with rungs of its own for each strategy: a trial is stopped only for
    trailing the trials of its own strategy at the same epoch.

    One set of rungs for all lets a strategy that scores early win every rung: a short
    progressive plan whose head trained at a high lr leads at epoch 2, while a 20-epoch
    single-phase plan at a low lr is still climbing. ASHA then stops nearly every
    single-phase trial there, and TPE, which ranks stopped trials below finished ones,
    stops proposing them (docs/benchmarks-history.md).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Never given a trial: each strategy's rungs start as a copy of it.
        self._empty_bracket = self._brackets[0]
        self._strategy_brackets: dict[str, Any] = {}

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)  # checks metric and mode
        strategy = str(trial.config.get("strategy"))
        if strategy not in self._strategy_brackets:
            self._strategy_brackets[strategy] = copy.deepcopy(self._empty_bracket)
        self._trial_info[trial.trial_id] = self._strategy_brackets[strategy]

    def debug_string(self) -> str:
        lines = [f"Using ASHA per strategy: num_stopped={self._num_stopped}"]
        lines += [f"{name}: {b.debug_str()}" for name, b in self._strategy_brackets.items()]
        return "\n".join(lines)


def build_scheduler(search: SearchConfig, max_t: int) -> Any:
    """The trial scheduler ``search.scheduler`` names; ``max_t`` is the longest plan in epochs."""
    if search.scheduler in ("asha", "strategy_asha"):
        kind = ASHAScheduler if search.scheduler == "asha" else StrategyASHAScheduler
        return kind(
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
