"""The phase engine: runs any PhasePlan on one worker or as one of N DDP workers."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
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
from trainables.data import ImageDataset, iterate_task_batches, load_dataset, shard_for_eval
from trainables.ewc import TaskAnchor, estimate_fisher, ewc_penalty
from trainables.losses import task_loss
from trainables.lr_schedules import PhaseLRSchedule, train_steps_per_epoch
from trainables.metric_names import TASK_METRICS
from trainables.metrics import TaskMetrics
from trainables.models import TaskModel, build_model
from trainables.phases import EarlyStopping, Phase, PhasePlan
from trainables.weighting import TaskWeighting, build_weighting

__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_REPORTS_FILE",
    "TASK_METRICS",
    "EngineContext",
    "Reporter",
    "configure_phase",
    "eval_batch_size",
    "quiet_train_logs",
    "reported_metrics",
    "run_plan",
    "train_loop_per_worker",
]

CHECKPOINT_FILE = "state.pt"
#: Every report of the run up to a checkpoint (its own last), beside it: what a resume
#: that finds the checkpoint but not the trial's result rows restores them from (see
#: ``search/recovery.py``).
CHECKPOINT_REPORTS_FILE = "reports.json"

#: Values of ``EngineContext.precision``.
PRECISIONS = ("auto", "fp32", "bf16")


#: The validation metric that stands for each task: forgetting, the best checkpoint
#: per task and validation-based weighting all follow it (higher is better).


def reported_metrics(tasks: tuple[str, ...]) -> tuple[str, ...]:
    """Metric names every epoch's report carries for ``tasks`` (targets may use them)."""
    names = ["val/loss", "train/loss"]
    if "cls" in tasks:
        names += ["val/acc", "train/acc"]
    names += [TASK_METRICS[task] for task in tasks]
    if "det" in tasks:
        names.append("val/det_map")
    for prefix in ("train/loss/", "val/loss/", "weight/", "forgetting/"):
        names += [prefix + task for task in tasks]
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
        precision: "fp32", "bf16" (autocast of forward passes to bfloat16; weights,
            optimiser and losses stay fp32) or "auto" (bf16 on a GPU that supports
            it, else fp32).
        channels_last: Keep weights and batches in channels-last memory format (faster
            convolutions on tensor-core GPUs); None: on a GPU only.
        data_on_device: Hold the whole data set in GPU memory, so batches need no host
            copy; None: when it fits in a quarter of the free GPU memory. Otherwise
            each batch is gathered on the host and copied.
    """

    targets: tuple[Target, ...] = ()
    tensorboard_dir: str | None = None
    hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    threads: int | None = None
    use_gpu: bool = False
    precision: str = "auto"
    channels_last: bool | None = None
    data_on_device: bool | None = None

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
    model: TaskModel,
    phase: Phase,
    trainable_groups: list[int],
    weight_decay: float,
    extra_params: list[nn.Parameter] | None = None,
) -> torch.optim.Optimizer:
    """One parameter group per trainable layer group, one per active head, and one
    for learned loss-weighting parameters if any.

    With ``layer_lr_decay`` each group below the heads gets ``lr * decay**depth``
    (depth 1 for the top backbone group); a head's lr is ``lr * head_lr[task]``.
    Groups carry a ``group`` key: the layer group's index, ``num_groups`` for every
    head (with the task in ``task``), or ``"weighting"``.
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
    for task in phase.tasks:
        groups.append(
            {
                "params": list(model.heads[task].parameters()),
                "lr": phase.lr * phase.head_lr.get(task, 1.0),
                "group": num_groups,
                "task": task,
            }
        )
    if extra_params:
        # Learned weights are not regularised towards zero: that would bias them.
        groups.append(
            {"params": extra_params, "lr": phase.lr, "group": "weighting", "weight_decay": 0.0}
        )
    return torch.optim.AdamW(groups, lr=phase.lr, weight_decay=weight_decay)


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


@dataclasses.dataclass
class _TaskBest:
    """A task's best validation score so far, with the weights that scored it."""

    value: float
    epoch: int
    model: dict[str, torch.Tensor]


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None trains in fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: unknown {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    # On CPUs bf16 autocast is mostly slower than fp32; on GPUs without bf16
    # (before Ampere) it would be emulated.
    if precision == "auto" and (device.type != "cuda" or not torch.cuda.is_bf16_supported()):
        return None
    return torch.bfloat16


def _to_device(data: ImageDataset, device: torch.device, on_device: bool | None) -> ImageDataset:
    """The data set's uint8 samples in GPU memory when asked, or when they fit in a quarter
    of what is free; else as they are, mapped on the host."""
    if on_device is None:
        free, _ = torch.cuda.mem_get_info(device)
        on_device = data.nbytes <= free // 4
    # A new object: the cached one on the host stays as it is for other trials.
    return data.to(device) if on_device else data


# Images per evaluation batch at small sizes; see `eval_batch_size`.
_EVAL_BATCH = 256


def eval_batch_size(image_size: int, batch_size: int) -> int:
    """256 images up to 64 px; above, as many as hold that many pixels, and at least a
    training batch: at 224 px a batch of 256 held 2 GB of activations on the CPU."""
    pixels = _EVAL_BATCH * 64 * 64 // image_size**2
    return min(_EVAL_BATCH, max(batch_size, pixels))


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
        self.tasks = plan.tasks
        self.model = build_model(plan.model, self.data.num_classes, self.tasks).to(self.device)
        self.autocast_dtype = resolve_precision(context.precision, self.device)
        on_gpu = self.device.type == "cuda"
        channels_last = on_gpu if context.channels_last is None else context.channels_last
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        if on_gpu:
            self.data = _to_device(self.data, self.device, context.data_on_device)
        self.shuffle = torch.Generator().manual_seed(plan.seed)
        self.position = _Position()
        self.anchors: list[TaskAnchor] = []
        self.task_best: dict[str, _TaskBest] = {}
        self.reports: list[dict[str, Any]] = []  # every report so far, for checkpoints
        self.resume_state: dict[str, Any] | None = None
        self.writer = None

    # -- checkpoints -------------------------------------------------------

    def _state(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: PhaseLRSchedule,
        weighting: TaskWeighting,
        early: _EarlyStopState,
    ) -> dict[str, Any]:
        return {
            "plan": self.plan.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": schedule.state_dict(),
            "weighting": weighting.state_dict(),
            "early_stopping": dataclasses.asdict(early),
            "position": dataclasses.asdict(self.position),
            "ewc_anchors": [anchor.to_state() for anchor in self.anchors],
            "task_best": {task: dataclasses.asdict(best) for task, best in self.task_best.items()},
            "shuffle_rng": self.shuffle.get_state(),
            "torch_rng": torch.get_rng_state(),
            "reports": list(self.reports),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint taken by this engine."""
        self.model.load_state_dict(state["model"])
        self.position = _Position(**state["position"])
        self.anchors = [
            TaskAnchor.from_state(anchor, self.device) for anchor in state.get("ewc_anchors", [])
        ]
        self.task_best = {
            task: _TaskBest(**best) for task, best in state.get("task_best", {}).items()
        }
        self.shuffle.set_state(state["shuffle_rng"])
        torch.set_rng_state(state["torch_rng"])
        self.reports = list(state.get("reports", []))
        self.resume_state = state

    @contextmanager
    def _checkpoint_dir(self, state_fn: Any) -> Iterator[str | None]:
        if self.rank != 0:
            yield None
            return
        with tempfile.TemporaryDirectory(prefix="phasetune-ckpt-") as directory:
            torch.save(state_fn(), os.path.join(directory, CHECKPOINT_FILE))
            with open(os.path.join(directory, CHECKPOINT_REPORTS_FILE), "w") as file:
                json.dump(self.reports, file, default=_jsonable)
            yield directory

    # -- epochs ------------------------------------------------------------

    def _batches(
        self, split: Any, shuffle: bool, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        for images, targets in iterate_task_batches(
            split,
            self.plan.batch_size,
            shuffle=shuffle,
            generator=generator if generator is not None else self.shuffle,
            rank=self.rank,
            world_size=self.world_size,
            device=self.device,
        ):
            yield images.contiguous(memory_format=self.memory_format), targets

    def _forward(
        self, model: nn.Module, images: torch.Tensor, tasks: tuple[str, ...]
    ) -> dict[str, torch.Tensor]:
        """Task outputs, under autocast when asked; losses and metrics then see fp32."""
        if self.autocast_dtype is None:
            return model(images, tasks)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype):
            outputs = model(images, tasks)
        return {task: output.float() for task, output in outputs.items()}

    def _loss(self, task: str, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return task_loss(
            task,
            output,
            target,
            num_classes=self.data.num_classes,
            label_smoothing=self.plan.label_smoothing,
            focal_gamma=self.plan.focal_gamma,
        )

    def train_epoch(
        self,
        model: nn.Module,
        phase: Phase,
        optimizer: torch.optim.Optimizer,
        schedule: PhaseLRSchedule,
        weighting: TaskWeighting,
        trainable_groups: list[int],
    ) -> tuple[dict[str, float], dict[str, float]]:
        """One pass over this rank's shard; returns the metrics and the mean task losses."""
        set_train_mode(self.model, trainable_groups)
        num_tasks = len(phase.tasks)
        # Running sums stay on the device: reading a value per step would make the
        # host wait for the accelerator every batch.
        loss_sums = torch.zeros(num_tasks, device=self.device)
        loss_counts = torch.zeros(num_tasks, device=self.device)
        weight_sums = torch.zeros(num_tasks, device=self.device)
        penalty_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen, steps = 0, 0
        alternate = phase.task_sampling == "alternate"
        for images, targets in self._batches(self.data.train, shuffle=True):
            # Alternating steps train one task each, in turn; every rank runs the
            # same step numbers, so DDP ranks agree on the task.
            active = (phase.tasks[steps % num_tasks],) if alternate else phase.tasks
            outputs = self._forward(model, images, active)
            losses = {task: self._loss(task, outputs[task], targets[task]) for task in active}
            if alternate:
                loss, weights = losses[active[0]], torch.ones(1, device=self.device)
                index = torch.tensor([steps % num_tasks], device=self.device)
            else:
                loss, weights = weighting.combine(losses)
                index = torch.arange(num_tasks, device=self.device)
            if phase.ewc is not None and self.anchors:
                penalty = ewc_penalty(self.model.backbone, self.anchors, phase.ewc.strength)
                loss = loss + penalty
                penalty_sum += penalty.detach()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self._average_weighting_grads(weighting)
            optimizer.step()
            schedule.after_batch()
            steps += 1
            loss_sums.index_add_(0, index, torch.stack([losses[t].detach() for t in active]))
            loss_counts.index_add_(0, index, torch.ones(len(active), device=self.device))
            weight_sums.index_add_(0, index, weights.detach().to(self.device))
            if "cls" in outputs:
                correct += (outputs["cls"].argmax(1) == targets["cls"]).sum()
                seen += len(images)
        local = [*loss_sums.tolist(), *loss_counts.tolist()]
        totals = _all_reduce_sum(
            [*local, float(penalty_sum), int(correct), seen, steps], self.world_size
        )
        sums, counts = totals[:num_tasks], totals[num_tasks : 2 * num_tasks]
        penalty_total, correct_total, seen_total, steps_total = totals[2 * num_tasks :]
        mean_losses = {
            task: total / count
            for task, total, count in zip(phase.tasks, sums, counts, strict=True)
            if count
        }
        metrics = {f"train/loss/{task}": value for task, value in mean_losses.items()}
        metrics["train/loss"] = sum(mean_losses.values())
        # Every rank runs the same steps with the same weights, so local means suffice.
        local_counts = loss_counts.clamp(min=1)
        weight_means = (weight_sums / local_counts).tolist()
        metrics.update(
            {f"weight/{task}": w for task, w in zip(phase.tasks, weight_means, strict=True)}
        )
        if phase.ewc is not None:
            metrics["train/ewc_penalty"] = penalty_total / max(steps_total, 1)
        if seen_total:
            metrics["train/acc"] = correct_total / seen_total
        return metrics, mean_losses

    def _average_buffers(self) -> None:
        """Average BatchNorm running statistics over ranks.

        DDP hands rank 0's buffers to every rank at the start of each forward, but
        the last training step still updates each rank's copy from its own batch;
        without this, every rank would evaluate its shard with different statistics
        and the checkpoint (rank 0's) would not be the model that was scored.
        """
        if self.world_size == 1:
            return
        for buffer in self.model.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer)
                buffer /= self.world_size

    def _average_weighting_grads(self, weighting: TaskWeighting) -> None:
        """Learned weighting parameters live outside DDP, so their gradients are
        averaged here; otherwise each rank would learn its own weights."""
        if self.world_size == 1:
            return
        for param in weighting.parameters():
            if param.grad is not None:
                dist.all_reduce(param.grad)
                param.grad /= self.world_size

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Every task of the plan on the validation split, synced across ranks."""
        self._average_buffers()
        self.model.eval()
        shard = shard_for_eval(self.data.val, self.rank, self.world_size)
        task_metrics = TaskMetrics(self.tasks, self.data.num_classes, self.device)
        loss_sums = dict.fromkeys(self.tasks, 0.0)
        batches = iterate_task_batches(
            shard,
            eval_batch_size(self.plan.data.image_size, self.plan.batch_size),
            shuffle=False,
            generator=None,
            device=self.device,
        )
        for images, batch_targets in batches:
            images = images.contiguous(memory_format=self.memory_format)
            targets = {task: batch_targets[task] for task in self.tasks}
            outputs = self._forward(self.model, images, self.tasks)
            for task in self.tasks:
                # Batch means times batch size: per-sample sums for every task's loss.
                loss = self._loss(task, outputs[task], targets[task])
                loss_sums[task] += float(loss) * len(images)
            task_metrics.update(outputs, targets)
        metrics = task_metrics.compute()
        totals = _all_reduce_sum([*loss_sums.values(), len(shard)], self.world_size)
        seen = max(totals[-1], 1)
        for task, total in zip(self.tasks, totals[:-1], strict=True):
            metrics[f"val/loss/{task}"] = total / seen
        metrics["val/loss"] = sum(metrics[f"val/loss/{task}"] for task in self.tasks)
        if "cls" in self.tasks:
            metrics["val/acc"] = metrics["val/cls_acc"]
        return metrics

    # -- phases ------------------------------------------------------------

    def _wrap(self, phase: Phase) -> nn.Module:
        """The module to train this phase.

        DDP is built anew every phase: it only synchronises the parameters that
        required grad when it was constructed, so a wrapper from the frozen phase
        would leave newly unfrozen groups training apart on each worker.
        """
        if self.world_size == 1:
            return self.model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # Alternating steps leave the other active heads without gradients.
        return DistributedDataParallel(
            self.model,
            device_ids=device_ids,
            find_unused_parameters=phase.task_sampling == "alternate" and len(phase.tasks) > 1,
        )

    def _lr_metrics(self, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        num_groups = len(self.model.layer_groups)
        lrs = {f"lr/group{k}": 0.0 for k in range(num_groups + 1)}
        for group in optimizer.param_groups:
            if group["group"] == "weighting":
                lrs["lr/weighting"] = group["lr"]
                continue
            lrs[f"lr/group{group['group']}"] = group["lr"]
            if "task" in group:
                lrs[f"lr/head/{group['task']}"] = group["lr"]
        return lrs

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
        if self.resume_state is None:
            self._anchor_earlier_tasks(phase)
        trainable_groups = configure_phase(self.model, phase)
        model = self._wrap(phase)
        weighting = build_weighting(phase.weighting, phase.tasks).to(self.device)
        optimizer = build_optimizer(
            self.model, phase, trainable_groups, self.plan.weight_decay, weighting.parameters()
        )
        steps_per_epoch = train_steps_per_epoch(
            len(self.data.train), self.plan.batch_size, self.world_size
        )
        schedule = PhaseLRSchedule(optimizer, phase, steps_per_epoch)
        early = _EarlyStopState()
        if self.resume_state is not None:
            weighting.load_state_dict(self.resume_state["weighting"])
            optimizer.load_state_dict(self.resume_state["optimizer"])
            schedule.load_state_dict(self.resume_state["scheduler"])
            early = _EarlyStopState(**self.resume_state["early_stopping"])
            self.resume_state = None
        trainable_params = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        metrics: dict[str, Any] | None = None
        while self.position.epoch_in_phase < phase.epochs:
            epoch_started = time.perf_counter()
            lrs = self._lr_metrics(optimizer)
            metrics, mean_losses = self.train_epoch(
                model, phase, optimizer, schedule, weighting, trainable_groups
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
            metrics.update(self._track_tasks(metrics))
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
            self.reports.append(dict(metrics))
            with self._checkpoint_dir(
                lambda: self._state(optimizer, schedule, weighting, early)
            ) as checkpoint_dir:
                self.reporter.report(metrics, checkpoint_dir)
        return metrics

    def _track_tasks(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        """Keep each trained task's best weights; report its forgetting.

        ``forgetting/<task>`` is the drop of the task's metric from its best since
        the task first trained to now: at the end of a run, how much of what it
        learned a later phase undid. A task not trained yet reports 0.
        """
        trained = {t for p in self.plan.phases[: self.position.phase_index + 1] for t in p.tasks}
        tracked = {}
        for task in self.tasks:
            value = metrics[TASK_METRICS[task]]
            if task not in trained:
                tracked[f"forgetting/{task}"] = 0.0
                continue
            best = self.task_best.get(task)
            if best is None or value > best.value:
                best = _TaskBest(value, self.position.global_epoch, _cpu_copy(self.model))
                self.task_best[task] = best
            tracked[f"forgetting/{task}"] = best.value - value
            tracked[f"best/{task}"] = best.value
            tracked[f"best_epoch/{task}"] = best.epoch
        return tracked

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


def _cpu_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().to("cpu", copy=True) for name, value in model.state_dict().items()}


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
    names = ["val/loss", "target_score"]
    if "cls" in plan.tasks:
        names.append("val/acc")
    if len(plan.tasks) > 1:
        names += [TASK_METRICS[task] for task in plan.tasks]
        names += [f"forgetting/{task}" for task in plan.tasks]
    metric_names = dict.fromkeys(names, 0.0)
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


def _jsonable(value: Any) -> Any:
    """A number JSON cannot write as it is (a NumPy or 0-d tensor value) as a float."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
