"""The training loop: `Trainer` walks a plan's phases and epochs on one worker or as one
of N DDP workers, tracking, logging and checkpointing after every epoch; `run_plan`
resumes it from the reporter's checkpoint and runs it to the end.

The order of everything that draws random numbers (seeding, model building, batch
shuffles, EWC's Fisher batches, dropout) is part of the behaviour: a resumed run and
every rank of a DDP run must draw exactly what an uninterrupted single run draws.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from analysis.targets import target_score, targets_met
from trainables.engine._checkpoint import CheckpointState, written_checkpoint
from trainables.engine._context import EngineContext, Reporter
from trainables.engine._ddp import param_divergence, wrap
from trainables.engine._epochs import EpochRunner
from trainables.engine._phase_setup import build_optimizer, configure_phase, lr_metrics
from trainables.engine._tensorboard import log_metrics, open_writer
from trainables.engine._tracking import EarlyStopState, Position, TaskBest, track_tasks
from trainables.ewc import TaskAnchor, estimate_fisher
from trainables.lr_schedules import PhaseLRSchedule, train_steps_per_epoch
from trainables.metric_names import TASK_METRICS
from trainables.phases import Phase, PhasePlan
from trainables.weighting import TaskWeighting, build_weighting

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["Trainer", "run_plan"]


def run_plan(plan: PhasePlan, context: EngineContext, reporter: Reporter) -> dict[str, Any]:
    """Run ``plan`` to the end (resuming from the reporter's checkpoint if any)."""
    if context.threads:
        torch.set_num_threads(context.threads)
    trainer = Trainer(plan, context, reporter)
    state = reporter.restore()
    if state is not None:
        trainer.restore(CheckpointState.from_dict(state))
    return trainer.run()


class Trainer(EpochRunner):
    """State of one run; ``run`` walks the plan's phases from where it stands."""

    def __init__(self, plan: PhasePlan, context: EngineContext, reporter: Reporter) -> None:
        super().__init__(plan, context, reporter.rank, reporter.world_size)
        self.reporter = reporter
        self.position = Position()
        self.anchors: list[TaskAnchor] = []
        self.task_best: dict[str, TaskBest] = {}
        self.reports: list[dict[str, Any]] = []  # every report so far, for checkpoints
        # The checkpoint resumed from, until the phase it stopped in has taken its
        # optimizer, schedule, weighting and early stopping back.
        self.resume: CheckpointState | None = None
        self.writer: SummaryWriter | None = None

    def restore(self, state: CheckpointState) -> None:
        """Continue from a checkpoint taken by this engine."""
        self.model.load_state_dict(state.model)
        # Copies: the run moves on from these; the checkpoint stays as it was.
        self.position = dataclasses.replace(state.position)
        self.anchors = [TaskAnchor.from_state(anchor, self.device) for anchor in state.ewc_anchors]
        self.task_best = dict(state.task_best)
        self.shuffle.set_state(state.shuffle_rng)
        torch.set_rng_state(state.torch_rng)
        self.reports = list(state.reports)
        self.resume = state

    def _checkpoint_state(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: PhaseLRSchedule,
        weighting: TaskWeighting,
        early: EarlyStopState,
    ) -> CheckpointState:
        return CheckpointState(
            plan=self.plan.to_dict(),
            model=self.model.state_dict(),
            optimizer=optimizer.state_dict(),
            scheduler=schedule.state_dict(),
            weighting=weighting.state_dict(),
            early_stopping=early,
            position=self.position,
            ewc_anchors=[anchor.to_state() for anchor in self.anchors],
            task_best=dict(self.task_best),
            shuffle_rng=self.shuffle.get_state(),
            torch_rng=torch.get_rng_state(),
            reports=list(self.reports),
        )

    # -- phases --------------------------------------------------------------

    def _anchor_earlier_tasks(self, phase: Phase) -> None:
        """Take EWC anchors for earlier phases' tasks this phase no longer trains.

        Called when a phase with EWC starts, so the anchors are the weights and
        Fisher at the end of the phase that trained each task; tasks anchored
        before keep their anchors.
        """
        if phase.ewc is None:
            return
        anchored = {anchor.task for anchor in self.anchors}
        earlier = self.plan.phases[: self.position.phase_index]
        tasks = [t for p in earlier for t in p.tasks if t not in phase.tasks and t not in anchored]
        for task in dict.fromkeys(tasks):
            generator = torch.Generator().manual_seed(self.plan.seed + self.position.phase_index)
            batches = itertools.islice(
                self._batches(self.data.train, shuffle=True, generator=generator),
                phase.ewc.fisher_batches,
            )
            # Eval mode: the Fisher describes the network as it is, without
            # dropout noise or BatchNorm statistics drifting under the estimate.
            self.model.eval()
            anchor = estimate_fisher(
                self.model.backbone,
                task,
                batches,
                lambda images, targets, task=task: self._loss(
                    task, self.model(images, (task,))[task], targets[task]
                ),
                self.world_size,
            )
            self.anchors.append(anchor)

    def run(self) -> dict[str, Any]:
        """Train every remaining phase; return the last metrics reported."""
        if self.rank == 0 and self.context.tensorboard_dir:
            self.writer = open_writer(self.context, self.plan)
        last: dict[str, Any] = {}
        started = time.perf_counter()
        try:
            while self.position.phase_index < len(self.plan.phases):
                last = self._run_phase(started) or last
                self.position.phase_index += 1
                self.position.epoch_in_phase = 0
        finally:
            if self.writer is not None:
                self.writer.close()
        return last

    def _run_phase(self, started: float) -> dict[str, Any] | None:
        phase = self.plan.phases[self.position.phase_index]
        if self.resume is None:
            self._anchor_earlier_tasks(phase)
        trainable_groups = configure_phase(self.model, phase)
        model = wrap(self.model, phase, self.device, self.world_size)
        weighting = build_weighting(phase.weighting, phase.tasks).to(self.device)
        optimizer = build_optimizer(
            self.model, phase, trainable_groups, self.plan.weight_decay, weighting.parameters()
        )
        steps_per_epoch = train_steps_per_epoch(
            len(self.data.train), self.plan.batch_size, self.world_size
        )
        schedule = PhaseLRSchedule(optimizer, phase, steps_per_epoch)
        early = EarlyStopState()
        if self.resume is not None:
            weighting.load_state_dict(self.resume.weighting)
            optimizer.load_state_dict(self.resume.optimizer)
            schedule.load_state_dict(self.resume.scheduler)
            early = dataclasses.replace(self.resume.early_stopping)
            self.resume = None
        trainable_params = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        metrics: dict[str, Any] | None = None
        while self.position.epoch_in_phase < phase.epochs:
            epoch_started = time.perf_counter()
            lrs = lr_metrics(self.model, optimizer)
            metrics, mean_losses = self.train_epoch(
                model, phase, optimizer, schedule, weighting, trainable_groups, self.anchors
            )
            metrics.update(self.evaluate())
            self._check_finite(metrics)
            weighting.end_epoch(
                mean_losses, {task: metrics[TASK_METRICS[task]] for task in phase.tasks}
            )
            self.position.epoch_in_phase += 1
            self.position.global_epoch += 1
            metrics.update(lrs)
            metrics.update(
                {
                    "phase": self.position.phase_index + 1,
                    "epoch": self.position.global_epoch,
                    "epoch_in_phase": self.position.epoch_in_phase,
                    "trainable_params": trainable_params,
                }
            )
            schedule.after_epoch(metrics["val/loss"])
            stop = False
            if phase.early_stopping is not None:
                stop = early.update(
                    phase.early_stopping, metrics, self.model, self.position.global_epoch
                )
            phase_over = stop or self.position.epoch_in_phase >= phase.epochs
            if (
                phase_over
                and early.best_model is not None
                and early.best_epoch != (self.position.global_epoch)
            ):
                # The phase hands on its best epoch's weights; report what they score
                # so the trial's last result describes the model it ends with.
                self.model.load_state_dict(early.best_model)
                metrics.update(self.evaluate())
                metrics["restored_epoch"] = early.best_epoch
            if stop:
                self.position.epoch_in_phase = phase.epochs
            metrics.update(
                track_tasks(self.task_best, metrics, self.plan, self.position, self.model)
            )
            metrics.update(param_divergence(self.model, self.world_size))
            metrics["plan_progress"] = self.position.progress(self.plan)
            metrics["target_score"] = target_score(metrics, self.context.targets)
            metrics["targets_met"] = targets_met(metrics, self.context.targets)
            metrics["time/epoch_s"] = time.perf_counter() - epoch_started
            metrics["time/total_s"] = time.perf_counter() - started
            if stop:
                metrics["early_stopped"] = 1
            last_phase = self.position.phase_index == len(self.plan.phases) - 1
            metrics["plan_complete"] = int(phase_over and last_phase)
            if self.writer is not None:
                log_metrics(self.writer, metrics, self.position.global_epoch)
            self.reports.append(dict(metrics))
            with written_checkpoint(
                lambda: self._checkpoint_state(optimizer, schedule, weighting, early),
                self.reports,
                self.rank,
            ) as checkpoint_dir:
                self.reporter.report(metrics, checkpoint_dir)
        return metrics

    def _check_finite(self, metrics: Mapping[str, Any]) -> None:
        for name in ("train/loss", "val/loss"):
            if not math.isfinite(metrics[name]):
                raise FloatingPointError(
                    f"{name} is {metrics[name]} at epoch {self.position.global_epoch + 1}"
                    f" (phase {self.position.phase_index + 1}): the run diverged"
                )
