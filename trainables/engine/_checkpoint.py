"""A run's checkpoint: the typed state (`CheckpointState`) and its files.

A checkpoint folder holds ``CHECKPOINT_FILE``, the state as a plain dict that
``torch.load(weights_only=True)`` reads, and ``CHECKPOINT_REPORTS_FILE``, every report
up to it as JSON. The dict's keys are the on-disk format: checkpoints written by
earlier versions must keep resuming, so `CheckpointState.to_dict` writes exactly those
keys and `CheckpointState.from_dict` reads them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from trainables.engine._tracking import EarlyStopState, Position, TaskBest

__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_REPORTS_FILE",
    "CheckpointState",
    "read_checkpoint",
    "written_checkpoint",
]

CHECKPOINT_FILE = "state.pt"
#: Every report of the run up to a checkpoint (its own last), beside it: what a resume
#: that finds the checkpoint but not the trial's result rows restores them from (see
#: ``search/recovery.py``).
CHECKPOINT_REPORTS_FILE = "reports.json"


@dataclasses.dataclass(frozen=True)
class CheckpointState:
    """Everything a run needs to continue after the epoch it was taken at.

    Attributes:
        plan: The plan as ``PhasePlan.to_dict`` wrote it: a record of what ran (a
            resumed run follows the plan it is given).
        model: The model's ``state_dict``.
        optimizer, scheduler, weighting: The ``state_dict`` of the current phase's
            optimizer, learning-rate schedule and task weighting.
        early_stopping: The current phase's early-stopping state.
        position: The next epoch to run.
        ewc_anchors: EWC anchors as ``TaskAnchor.to_state`` writes them; the run
            places them on its own device.
        task_best: Each trained task's best score and weights.
        shuffle_rng: State of the generator that shuffles training batches.
        torch_rng: Torch's global RNG state (dropout, augmentation).
        reports: Every report up to this checkpoint, its own last.
    """

    plan: dict[str, Any]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    weighting: dict[str, Any]
    early_stopping: EarlyStopState
    position: Position
    ewc_anchors: list[dict[str, Any]]
    task_best: dict[str, TaskBest]
    shuffle_rng: torch.Tensor
    torch_rng: torch.Tensor
    reports: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """The state as written to ``CHECKPOINT_FILE`` (keys in this order)."""
        return {
            "plan": self.plan,
            "model": self.model,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "weighting": self.weighting,
            # asdict copies: the file holds the values as they were at this epoch.
            "early_stopping": dataclasses.asdict(self.early_stopping),
            "position": dataclasses.asdict(self.position),
            "ewc_anchors": list(self.ewc_anchors),
            "task_best": {task: dataclasses.asdict(best) for task, best in self.task_best.items()},
            "shuffle_rng": self.shuffle_rng,
            "torch_rng": self.torch_rng,
            "reports": list(self.reports),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> CheckpointState:
        """The state in a dict `to_dict` wrote, by this version or an earlier one."""
        return cls(
            plan=raw["plan"],
            model=raw["model"],
            optimizer=raw["optimizer"],
            scheduler=raw["scheduler"],
            weighting=raw["weighting"],
            early_stopping=EarlyStopState(**raw["early_stopping"]),
            position=Position(**raw["position"]),
            # The last three were added after the first checkpoints were written; those
            # resume with none.
            ewc_anchors=list(raw.get("ewc_anchors", [])),
            task_best={task: TaskBest(**best) for task, best in raw.get("task_best", {}).items()},
            shuffle_rng=raw["shuffle_rng"],
            torch_rng=raw["torch_rng"],
            reports=list(raw.get("reports", [])),
        )


def read_checkpoint(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The state dict in a checkpoint folder (`CheckpointState.from_dict` types it)."""
    return torch.load(os.path.join(directory, CHECKPOINT_FILE), weights_only=True)


@contextmanager
def written_checkpoint(
    state: Callable[[], CheckpointState], reports: list[dict[str, Any]], rank: int
) -> Iterator[str | None]:
    """A temporary folder holding the checkpoint while it is reported; None on ranks
    other than 0.

    Every rank holds the same weights, so rank 0's checkpoint is the run's; ``state``
    is only called there, so the other ranks never build one.
    """
    if rank != 0:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="phasetune-ckpt-") as directory:
        torch.save(state().to_dict(), os.path.join(directory, CHECKPOINT_FILE))
        with open(os.path.join(directory, CHECKPOINT_REPORTS_FILE), "w") as file:
            json.dump(reports, file, default=_jsonable)
        yield directory


def _jsonable(value: Any) -> Any:
    """A number JSON cannot write as it is (a NumPy or 0-d tensor value) as a float."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
