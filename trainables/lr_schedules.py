"""A phase's learning rates: the schedule of its kind, and a linear warmup in front.

``constant``, ``cosine``, ``step`` and ``plateau`` move once per epoch, as their torch
schedulers; ``one_cycle`` and the warmup move once per optimizer step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from trainables.phases import Phase

__all__ = ["PhaseLRSchedule", "build_lr_scheduler", "train_steps_per_epoch"]


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, phase: Phase, steps_per_epoch: int = 1
) -> Any:
    """The torch scheduler of the phase's main schedule, the part after any warmup; None
    for ``constant`` or when the warmup fills the phase.

    ``one_cycle`` is stepped per optimizer step (``steps_per_epoch`` of them each
    epoch), every other kind once per epoch. Building one sets each group's lr to
    where the schedule starts (``one_cycle``: its lr at phase start over ``div``).
    """
    schedule = phase.lr_schedule
    epochs = phase.epochs - schedule.warmup_epochs
    if epochs < 1:
        return None
    if schedule.kind == "cosine":
        # T_max = epochs - 1 so that the phase's last epoch runs at final_lr.
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(epochs - 1, 1), eta_min=schedule.final_lr
        )
    if schedule.kind == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=schedule.step_size, gamma=schedule.gamma
        )
    if schedule.kind == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=schedule.factor, patience=schedule.patience
        )
    if schedule.kind == "one_cycle":
        total_steps = epochs * steps_per_epoch
        if total_steps < 3:
            return None  # no room for a rise and a fall: the phase trains at its lr
        # OneCycleLR's rise ends at step pct_start * total_steps - 1 and divides by zero
        # where that is step 0: on few steps (small data, short phases) the rise takes
        # at least two, rather than the trial failing.
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=total_steps,
            pct_start=max(schedule.pct_start, 2 / total_steps),
            anneal_strategy="cos",
            div_factor=schedule.div,
            final_div_factor=schedule.final_div,
        )
    return None


class PhaseLRSchedule:
    """A phase's learning rates: the linear warmup, if any, then the main schedule.

    The engine calls ``after_batch`` after every optimizer step and ``after_epoch``
    after every epoch; the warmup and ``one_cycle`` move the lrs per step, the other
    kinds per epoch. Without warmup the kinds stepped per epoch run exactly as their
    torch schedulers alone.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, phase: Phase, steps_per_epoch: int
    ) -> None:
        self.optimizer = optimizer
        self.warmup_epochs = phase.lr_schedule.warmup_epochs
        self.main = build_lr_scheduler(optimizer, phase, steps_per_epoch)
        # Taken after the main scheduler is built, as that may move them (one_cycle
        # starts at lr / div): the warmup ramps to where the main schedule starts.
        self.start_lrs = [group["lr"] for group in optimizer.param_groups]
        # At least 1: a rank's share too small for one batch must not divide by zero.
        self.warmup_steps = max(self.warmup_epochs * steps_per_epoch, 1)
        self.steps = 0
        self.epochs = 0
        if self.warmup_epochs:
            self._ramp()

    def _ramp(self) -> None:
        """The warmup's lrs for the next step: (steps + 1) / warmup_steps of the start."""
        # min(): the share is exactly 1.0 from the last warmup step on, so the main
        # schedule takes over from its own start lrs, not a rounded product.
        share = min(self.steps + 1, self.warmup_steps) / self.warmup_steps
        for group, start in zip(self.optimizer.param_groups, self.start_lrs, strict=True):
            group["lr"] = start * share

    def after_batch(self) -> None:
        self.steps += 1
        if self.epochs < self.warmup_epochs:
            self._ramp()
        elif isinstance(self.main, torch.optim.lr_scheduler.OneCycleLR):
            self.main.step()

    def after_epoch(self, val_loss: float) -> None:
        self.epochs += 1
        # Through the warmup's last epoch the main schedule waits: it starts with the
        # first epoch after it.
        if self.epochs <= self.warmup_epochs or self.main is None:
            return
        if isinstance(self.main, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.main.step(val_loss)
        elif not isinstance(self.main, torch.optim.lr_scheduler.OneCycleLR):
            self.main.step()

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "epochs": self.epochs,
            "main": self.main.state_dict() if self.main is not None else None,
        }

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        """Continue from ``state_dict()``; the optimizer's state (which holds the
        current lrs) is loaded separately."""
        if state is None or "main" not in state:
            # A checkpoint from before warmups held the torch scheduler's state alone;
            # without a warmup nothing else mattered.
            if self.main is not None and state is not None:
                self.main.load_state_dict(state)
            return
        self.steps, self.epochs = state["steps"], state["epochs"]
        if self.main is not None:
            self.main.load_state_dict(state["main"])


def train_steps_per_epoch(num_samples: int, batch_size: int, world_size: int) -> int:
    """Optimizer steps each rank takes in one training epoch, as the engine iterates:
    ``iterate_task_batches`` cuts the samples to a multiple of ``world_size``, gives
    every rank an equal share and keeps a short last batch (no ``drop_last``)."""
    return -(-(num_samples // world_size) // batch_size)
