"""The phase engine: runs any PhasePlan on one worker or as one of N DDP workers."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from analysis.targets import Target, target_score, targets_met
from trainables.data import ImageDataset, iterate_batches, load_dataset, shard_for_eval
from trainables.models import TaskModel, build_model
from trainables.phases import EarlyStopping, Phase, PhasePlan
from trainables.weighting import TaskWeighting, build_weighting

__all__ = [
    "CHECKPOINT_FILE",
    "EngineContext",
    "Reporter",
    "configure_phase",
    "quiet_train_logs",
    "reported_metrics",
    "run_plan",
    "train_loop_per_worker",
]

CHECKPOINT_FILE = "state.pt"


def reported_metrics(tasks: tuple[str, ...]) -> tuple[str, ...]:
    """Metric names every epoch's report carries for ``tasks`` (targets may use them)."""
    names = ["val/acc", "val/loss", "train/acc", "train/loss"]
    names += [f"train/loss/{task}" for task in tasks] + [f"weight/{task}" for task in tasks]
    return tuple(names)


@dataclasses.dataclass(frozen=True)
class EngineContext:
    """What a run needs besides its plan.

    Attributes:
        targets: The targets ``target_score`` is computed against.
        tensorboard_dir: Where rank 0 writes TensorBoard events; None writes none.
        hparams: Hyperparameters shown in TensorBoard's HParams dashboard.
        threads: Torch intra-op threads for this worker (its CPU share).
        use_gpu: Train on this worker's GPU when one is visible.
    """

    targets: tuple[Target, ...] = ()
    tensorboard_dir: str | None = None
    hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    threads: int | None = None
    use_gpu: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> EngineContext:
        raw = dict(raw)
        raw["targets"] = tuple(Target(**target) for target in raw.get("targets", ()))
        return cls(**raw)


class Reporter(Protocol):
    """Where a run's metrics and checkpoints go (Ray Train, Ray Tune, or memory)."""

    rank: int
    world_size: int

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None: ...

    def restore(self) -> Any: ...


@dataclasses.dataclass
class _Position:
    """Where the run is: the next epoch to run is ``epoch_in_phase`` of ``phase_index``."""

    phase_index: int = 0
    epoch_in_phase: int = 0
    global_epoch: int = 0


@dataclasses.dataclass
class _EarlyStopState:
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


def configure_phase(model: TaskModel, phase: Phase) -> list[int]:
    """Set ``requires_grad`` for a phase; return the indices of backbone groups that train.

    Heads of the phase's active tasks train; other heads are frozen so that DDP and
    the optimizer only see what this phase trains.
    """
    trainable = set(phase.trainable_groups(len(model.layer_groups)))
    for index, group in enumerate(model.layer_groups):
        group.requires_grad_(index in trainable)
    for task, head in model.heads.items():
        head.requires_grad_(task in phase.tasks)
    return sorted(trainable)


def set_train_mode(model: TaskModel, trainable_groups: list[int]) -> None:
    """Train mode, except frozen groups stay in eval so their BatchNorm stats hold."""
    model.train()
    for index, group in enumerate(model.layer_groups):
        if index not in trainable_groups:
            group.eval()


def build_optimizer(
    model: TaskModel, phase: Phase, trainable_groups: list[int], weight_decay: float
) -> torch.optim.Optimizer:
    """One parameter group per trainable layer group plus one for the heads.

    With ``layer_lr_decay`` each group below the heads gets ``lr * decay**depth``
    (depth 1 for the top backbone group).
    """
    num_groups = len(model.layer_groups)
    decay = phase.layer_lr_decay or 1.0
    groups = [
        {
            "params": list(model.layer_groups[index].parameters()),
            "lr": phase.lr * decay ** (num_groups - index),
            "group": index,
        }
        for index in trainable_groups
    ]
    head_params = [p for task in phase.tasks for p in model.heads[task].parameters()]
    groups.append({"params": head_params, "lr": phase.lr, "group": num_groups})
    return torch.optim.AdamW(groups, lr=phase.lr, weight_decay=weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, phase: Phase) -> Any:
    schedule = phase.lr_schedule
    if schedule.kind == "cosine":
        # T_max = epochs - 1 so that the phase's last epoch runs at final_lr.
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(phase.epochs - 1, 1), eta_min=schedule.final_lr
        )
    if schedule.kind == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=schedule.step_size, gamma=schedule.gamma
        )
    if schedule.kind == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=schedule.factor, patience=schedule.patience
        )
    return None


def _all_reduce_sum(values: list[float], world_size: int) -> list[float]:
    if world_size == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def param_divergence(model: TaskModel, world_size: int) -> dict[str, float]:
    """Largest difference of any parameter between workers, per layer group.

    Under correct DDP every worker holds identical weights, so every value is 0; a
    group that trains without being synchronised shows up here at once.
    """
    if world_size == 1:
        return {}
    parts = {f"group{i}": group for i, group in enumerate(model.layer_groups)}
    parts[f"group{len(model.layer_groups)}"] = model.heads
    divergence = {}
    for name, module in parts.items():
        flat = torch.cat([p.detach().reshape(-1).float().cpu() for p in module.parameters()])
        high, low = flat.clone(), flat.clone()
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        divergence[f"ddp/param_divergence/{name}"] = float((high - low).max())
    divergence["ddp/param_divergence"] = max(divergence.values())
    return divergence


class _Trainer:
    """State of one run; ``run`` walks the plan's phases from where it stands."""

    def __init__(self, plan: PhasePlan, context: EngineContext, reporter: Reporter) -> None:
        self.plan = plan.validate()
        self.context = context
        self.reporter = reporter
        self.rank, self.world_size = reporter.rank, reporter.world_size
        if context.use_gpu and torch.cuda.is_available():
            self.device = torch.device("cuda", torch.cuda.current_device())
        else:
            self.device = torch.device("cpu")
        # One seed on every rank: identical initial heads, identical shuffles.
        torch.manual_seed(plan.seed)
        self.data: ImageDataset = load_dataset(plan.data)
        self.model = build_model(plan.model, self.data.num_classes).to(self.device)
        self.shuffle = torch.Generator().manual_seed(plan.seed)
        self.position = _Position()
        self.resume_state: dict[str, Any] | None = None
        self.writer = None

    # -- checkpoints -------------------------------------------------------

    def _state(
        self,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        weighting: TaskWeighting,
        early: _EarlyStopState,
    ) -> dict[str, Any]:
        return {
            "plan": self.plan.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "weighting": weighting.state,
            "early_stopping": dataclasses.asdict(early),
            "position": dataclasses.asdict(self.position),
            "shuffle_rng": self.shuffle.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint taken by this engine."""
        self.model.load_state_dict(state["model"])
        self.position = _Position(**state["position"])
        self.shuffle.set_state(state["shuffle_rng"])
        torch.set_rng_state(state["torch_rng"])
        self.resume_state = state

    @contextmanager
    def _checkpoint_dir(self, state_fn: Any) -> Iterator[str | None]:
        if self.rank != 0:
            yield None
            return
        with tempfile.TemporaryDirectory(prefix="phasetune-ckpt-") as directory:
            torch.save(state_fn(), os.path.join(directory, CHECKPOINT_FILE))
            yield directory

    # -- epochs ------------------------------------------------------------

    def _batches(self, split: Any, shuffle: bool) -> Iterator[tuple[torch.Tensor, dict]]:
        for images, labels in iterate_batches(
            split,
            self.plan.batch_size,
            shuffle=shuffle,
            generator=self.shuffle if shuffle else None,
            rank=self.rank,
            world_size=self.world_size,
        ):
            yield images.to(self.device), {"cls": labels.to(self.device)}

    def _task_losses(
        self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        return {
            task: nn.functional.cross_entropy(
                outputs[task], targets[task], label_smoothing=self.plan.label_smoothing
            )
            for task in outputs
        }

    def train_epoch(
        self,
        model: nn.Module,
        phase: Phase,
        optimizer: torch.optim.Optimizer,
        weighting: TaskWeighting,
        trainable_groups: list[int],
    ) -> dict[str, float]:
        set_train_mode(self.model, trainable_groups)
        # Running sums stay on the device: reading a value per step would make the
        # host wait for the accelerator every batch.
        loss_sums = torch.zeros(len(phase.tasks), device=self.device)
        weight_sums = torch.zeros(len(phase.tasks), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen, steps = 0, 0
        for images, targets in self._batches(self.data.train, shuffle=True):
            outputs = model(images, phase.tasks)
            losses = self._task_losses(outputs, targets)
            loss, weights = weighting.combine(losses)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            loss_sums += torch.stack([losses[task].detach() for task in phase.tasks])
            weight_sums += weights.detach()
            if "cls" in outputs:
                correct += (outputs["cls"].argmax(1) == targets["cls"]).sum()
                seen += len(images)
        sums = dict(zip(phase.tasks, loss_sums.tolist(), strict=True))
        weight_means = dict(zip(phase.tasks, (weight_sums / max(steps, 1)).tolist(), strict=True))
        totals = _all_reduce_sum([*sums.values(), int(correct), seen, steps], self.world_size)
        task_totals, (correct, seen, steps) = totals[: len(sums)], totals[len(sums) :]
        mean_losses = {
            task: value / max(steps, 1) for task, value in zip(sums, task_totals, strict=True)
        }
        weighting.end_epoch(mean_losses)
        metrics = {f"train/loss/{task}": value for task, value in mean_losses.items()}
        metrics["train/loss"] = sum(mean_losses.values())
        # Every rank runs the same steps with the same weights, so local means suffice.
        metrics.update({f"weight/{task}": weight for task, weight in weight_means.items()})
        if seen:
            metrics["train/acc"] = correct / seen
        return metrics

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        shard = shard_for_eval(self.data.val, self.rank, self.world_size)
        loss_sum, correct, seen = 0.0, 0, 0
        for start in range(0, len(shard), 512):
            images = shard.images[start : start + 512].to(self.device)
            labels = shard.labels[start : start + 512].to(self.device)
            logits = self.model(images, ("cls",))["cls"]
            loss_sum += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
        loss_sum, correct, seen = _all_reduce_sum([loss_sum, correct, seen], self.world_size)
        return {"val/loss": loss_sum / max(seen, 1), "val/acc": correct / max(seen, 1)}

    # -- phases ------------------------------------------------------------

    def _wrap(self) -> nn.Module:
        """The module to train this phase.

        DDP is built anew every phase: it only synchronises the parameters that
        required grad when it was constructed, so a wrapper from the frozen phase
        would leave newly unfrozen groups training apart on each worker.
        """
        if self.world_size == 1:
            return self.model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.model, device_ids=device_ids)

    def _lr_metrics(self, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        lrs = {f"lr/group{k}": 0.0 for k in range(len(self.model.layer_groups) + 1)}
        for group in optimizer.param_groups:
            lrs[f"lr/group{group['group']}"] = group["lr"]
        return lrs

    def run(self) -> dict[str, Any]:
        """Train every remaining phase; return the last metrics reported."""
        if self.rank == 0 and self.context.tensorboard_dir:
            self.writer = _open_writer(self.context, self.plan)
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
        trainable_groups = configure_phase(self.model, phase)
        model = self._wrap()
        optimizer = build_optimizer(self.model, phase, trainable_groups, self.plan.weight_decay)
        scheduler = build_scheduler(optimizer, phase)
        weighting = build_weighting(phase.weighting, phase.tasks)
        early = _EarlyStopState()
        if self.resume_state is not None:
            optimizer.load_state_dict(self.resume_state["optimizer"])
            if scheduler is not None and self.resume_state["scheduler"] is not None:
                scheduler.load_state_dict(self.resume_state["scheduler"])
            weighting.state = self.resume_state["weighting"]
            early = _EarlyStopState(**self.resume_state["early_stopping"])
            self.resume_state = None
        trainable_params = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        metrics: dict[str, Any] | None = None
        while self.position.epoch_in_phase < phase.epochs:
            epoch_started = time.perf_counter()
            lrs = self._lr_metrics(optimizer)
            metrics = self.train_epoch(model, phase, optimizer, weighting, trainable_groups)
            metrics.update(self.evaluate())
            self._check_finite(metrics)
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
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(metrics["val/loss"])
            elif scheduler is not None:
                scheduler.step()
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
            metrics.update(param_divergence(self.model, self.world_size))
            metrics["plan_progress"] = self._plan_progress()
            metrics["target_score"] = target_score(metrics, self.context.targets)
            metrics["targets_met"] = targets_met(metrics, self.context.targets)
            metrics["time/epoch_s"] = time.perf_counter() - epoch_started
            metrics["time/total_s"] = time.perf_counter() - started
            if stop:
                metrics["early_stopped"] = 1
            last_phase = self.position.phase_index == len(self.plan.phases) - 1
            metrics["plan_complete"] = int(phase_over and last_phase)
            self._log(metrics)
            with self._checkpoint_dir(
                lambda: self._state(optimizer, scheduler, weighting, early)
            ) as checkpoint_dir:
                self.reporter.report(metrics, checkpoint_dir)
        return metrics

    def _plan_progress(self) -> float:
        """Share of the plan's epochs behind the run, a phase that stopped early
        counting as done: schedulers compare trials at equal shares of their plans."""
        done = sum(p.epochs for p in self.plan.phases[: self.position.phase_index])
        return (done + self.position.epoch_in_phase) / self.plan.total_epochs

    def _check_finite(self, metrics: Mapping[str, Any]) -> None:
        for name in ("train/loss", "val/loss"):
            if not math.isfinite(metrics[name]):
                raise FloatingPointError(
                    f"{name} is {metrics[name]} at epoch {self.position.global_epoch + 1}"
                    f" (phase {self.position.phase_index + 1}): the run diverged"
                )

    def _log(self, metrics: Mapping[str, Any]) -> None:
        if self.writer is None:
            return
        for name, value in metrics.items():
            if isinstance(value, (int, float)):
                self.writer.add_scalar(name, value, self.position.global_epoch)
        self.writer.flush()


def _open_writer(context: EngineContext, plan: PhasePlan) -> Any:
    """A SummaryWriter with the trial's HParams written at the start.

    Writing the HParams session-start summary now (not when the trial ends, as
    Tune does) makes running trials comparable in TensorBoard's HParams view.
    """
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    writer = SummaryWriter(log_dir=context.tensorboard_dir)
    hparam_values = {
        name: value if isinstance(value, (int, float, str, bool)) else str(value)
        for name, value in context.hparams.items()
    }
    hparam_values.setdefault("strategy", plan.strategy)
    metric_names = {"val/acc": 0.0, "val/loss": 0.0, "target_score": 0.0}
    _, session_start, _ = hparams(hparam_values, metric_names)
    # Only this trial's session start: an experiment summary per trial would list
    # only this trial's parameters, and TensorBoard would show whichever it read
    # first. Without one, it builds the experiment from every trial's session.
    writer.file_writer.add_summary(session_start)
    return writer


def run_plan(plan: PhasePlan, context: EngineContext, reporter: Reporter) -> dict[str, Any]:
    """Run ``plan`` to the end (resuming from the reporter's checkpoint if any)."""
    if context.threads:
        torch.set_num_threads(context.threads)
    trainer = _Trainer(plan, context, reporter)
    state = reporter.restore()
    if state is not None:
        trainer.restore(state)
    return trainer.run()


class _RayTrainReporter:
    """Reports from inside a Ray Train worker (every rank reports, rank 0 checkpoints)."""

    def __init__(self) -> None:
        import ray.train

        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)

    def restore(self) -> dict[str, Any] | None:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            return torch.load(os.path.join(directory, CHECKPOINT_FILE), weights_only=True)


def quiet_train_logs() -> None:
    """Ray Train logs every report with all its metrics at INFO, per worker and epoch,
    which buries the search's own output; warnings and errors still come through."""
    import logging

    from ray.train.v2._internal.execution import context as train_context

    # The context module names its logger by file path, not by module name.
    for name in (
        train_context.__file__,
        "ray.train.v2._internal.execution.storage",
        "ray.train._internal.storage",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: ``config`` holds the plan and context as dicts."""
    quiet_train_logs()
    plan = PhasePlan.from_dict(config["plan"])
    context = EngineContext.from_dict(config["context"])
    run_plan(plan, context, _RayTrainReporter())
