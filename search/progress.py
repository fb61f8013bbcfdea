"""One line per trial event on the console, instead of Tune's per-trial tables."""

from __future__ import annotations

import json
import sys
from typing import Any

from ray.tune import Callback
from rich.console import Console

from analysis.recipes import plan_summary
from trainables.launch import plan_for_trial
from trainables.metric_names import TASK_METRICS
from trainables.phases import PlanError
from trainables.storage import ExperimentStore
from trainables.strategies import PlanContext

__all__ = ["PlanRecorder", "TrialProgress", "describe_trial", "plan_summary"]


#: What a finished multi-task trial's line shows.
MULTI_TASK_METRICS = tuple(TASK_METRICS[task] for task in ("det", "seg", "cls"))


def describe_trial(config: dict[str, Any], context: PlanContext) -> str:
    """Strategy and plan summary of a trial's config."""
    try:
        plan = plan_for_trial(config, context)
    except (PlanError, KeyError) as error:
        return f"{config.get('strategy')} (invalid plan: {error})"
    return f"{plan.strategy} {plan_summary(plan)}"


class TrialProgress(Callback):
    """Prints when a trial starts, finishes, is stopped early or fails.

    It holds only picklable state (Tune saves callbacks with the experiment).
    """

    def __init__(self, context: PlanContext, total: int) -> None:
        self.context = context
        self.total = total
        self.finished = 0

    def print_line(self, message: str) -> None:
        width = None if sys.stdout.isatty() else 160
        Console(width=width).print(f"[dim]phasetune:[/] {message}", highlight=False)

    def describe(self, config: dict[str, Any]) -> str:
        return describe_trial(config, self.context)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.print_line(f"trial {trial.trial_id} started: {self.describe(trial.config)}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.finished += 1
        result = trial.last_result or {}
        how = "finished" if result.get("plan_complete") else "stopped early by the scheduler"
        # Each task's metric for a multi-task trial, val/acc for a single-task one
        # (which reports its accuracy as val/cls_acc too).
        shown = [name for name in MULTI_TASK_METRICS if name in result]
        if shown in ([], ["val/cls_acc"]):
            shown = ["val/acc"]
        values = ", ".join(f"{name} {result.get(name, float('nan')):.4f}" for name in shown)
        self.print_line(
            f"trial {trial.trial_id} {how} after {result.get('epoch', 0)} epochs: {values},"
            f" target_score {result.get('target_score', float('nan')):.4f}"
            f" [{self.finished} of {self.total} trials done]"
        )

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.finished += 1
        lines = [line for line in str(trial.get_error() or "").splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"see {trial.error_file}"
        self.print_line(f"trial {trial.trial_id} failed: {reason}")


class PlanRecorder(Callback):
    """Writes each trial's expanded plan to ``<experiment>/plans/<trial id>.json`` when
    it starts, so the results table can show plans without rebuilding them.

    ``experiment_dir`` is a path or a URI (see ``trainables.storage``).
    """

    def __init__(self, context: PlanContext, experiment_dir: str) -> None:
        self.context = context
        self.experiment_dir = experiment_dir

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        try:
            plan = plan_for_trial(trial.config, self.context).to_dict()
        except (PlanError, KeyError):
            return  # the trial itself fails with the reason
        store = ExperimentStore.at(self.experiment_dir)
        store.write_text(f"plans/{trial.trial_id}.json", json.dumps(plan, indent=1))
