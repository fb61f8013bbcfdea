"""What a run keeps track of between epochs: where it stands in its plan (`Position`),
a phase's early stopping (`EarlyStopState`), and each task's best score with the
weights that scored it, from which forgetting is measured (`TaskBest`, `track_tasks`).

All of it goes into checkpoints (see ``_checkpoint``), so a resumed run stops, restores
and reports forgetting exactly as the uninterrupted one would.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from trainables.metric_names import TASK_METRICS
from trainables.phases import EarlyStopping, PhasePlan

__all__ = ["EarlyStopState", "Position", "TaskBest", "track_tasks"]


@dataclasses.dataclass
class Position:
    """Where the run is: the next epoch to run is ``epoch_in_phase`` of ``phase_index``."""

    phase_index: int = 0
    epoch_in_phase: int = 0
    global_epoch: int = 0

    def progress(self, plan: PhasePlan) -> float:
        """Share of the plan's epochs behind the run, a phase that stopped early
        counting as done: schedulers compare trials at equal shares of their plans."""
        done = sum(p.epochs for p in plan.phases[: self.phase_index])
        return (done + self.epoch_in_phase) / plan.total_epochs


@dataclasses.dataclass
class EarlyStopState:
    """A phase's best value of its early-stopping metric so far, and since when."""

    best: float | None = None
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    best_model: dict[str, torch.Tensor] | None = None
    best_metrics: dict[str, Any] | None = None

    def update(
        self, rule: EarlyStopping, metrics: Mapping[str, Any], model: nn.Module, epoch: int
    ) -> bool:
        """Record this epoch; return True when the phase should stop."""
        value = metrics[rule.metric]
        better = self.best is None or (
            value < self.best if rule.mode == "min" else value > self.best
        )
        if better:
            self.best, self.best_epoch, self.epochs_without_improvement = value, epoch, 0
            self.best_metrics = dict(metrics)
            if rule.restore_best:
                self.best_model = copy.deepcopy(model.state_dict())
        else:
            self.epochs_without_improvement += 1
        return self.epochs_without_improvement >= rule.patience


@dataclasses.dataclass
class TaskBest:
    """A task's best validation score so far, with the weights that scored it."""

    value: float
    epoch: int
    model: dict[str, torch.Tensor]


def track_tasks(
    task_best: dict[str, TaskBest],
    metrics: Mapping[str, Any],
    plan: PhasePlan,
    position: Position,
    model: nn.Module,
) -> dict[str, float]:
    """Keep each trained task's best weights in ``task_best``; report its forgetting.

    ``forgetting/<task>`` is the drop of the task's metric from its best since
    the task first trained to now: at the end of a run, how much of what it
    learned a later phase undid. A task not trained yet reports 0.
    """
    trained = {t for p in plan.phases[: position.phase_index + 1] for t in p.tasks}
    tracked = {}
    for task in plan.tasks:
        value = metrics[TASK_METRICS[task]]
        if task not in trained:
            tracked[f"forgetting/{task}"] = 0.0
            continue
        best = task_best.get(task)
        if best is None or value > best.value:
            best = TaskBest(value, position.global_epoch, _cpu_copy(model))
            task_best[task] = best
        tracked[f"forgetting/{task}"] = best.value - value
        tracked[f"best/{task}"] = best.value
        tracked[f"best_epoch/{task}"] = best.epoch
    return tracked


def _cpu_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    # Copies on the host: the best weights of every task then cost no GPU memory, and
    # the live weights training goes on to change are not aliased.
    return {name: value.detach().to("cpu", copy=True) for name, value in model.state_dict().items()}
