"""One worker's share of a run: its device, data and model (`EpochRunner`), and one pass
over them, an epoch of training or an evaluation synced across ranks.

Building it seeds torch's RNG with the plan's seed before the data and model are made,
so every rank starts from the same weights and the same shuffles.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from trainables.data import ImageDataset, Split, iterate_task_batches, load_dataset, shard_for_eval
from trainables.engine._context import EngineContext, place_data, resolve_precision
from trainables.engine._ddp import all_reduce_sum, average_buffers, average_grads
from trainables.engine._phase_setup import set_train_mode
from trainables.ewc import TaskAnchor, ewc_penalty
from trainables.losses import task_loss
from trainables.lr_schedules import PhaseLRSchedule
from trainables.metrics import TaskMetrics
from trainables.models import build_model
from trainables.phases import Phase, PhasePlan
from trainables.weighting import TaskWeighting

__all__ = ["EpochRunner", "eval_batch_size"]

# Images per evaluation batch at small sizes; see `eval_batch_size`.
_EVAL_BATCH = 256


def eval_batch_size(image_size: int, batch_size: int) -> int:
    """256 images up to 64 px; above, as many as hold that many pixels, and at least a
    training batch: at 224 px a batch of 256 held 2 GB of activations on the CPU."""
    pixels = _EVAL_BATCH * 64 * 64 // image_size**2
    return min(_EVAL_BATCH, max(batch_size, pixels))


class EpochRunner:
    """A worker's device, data and model, with what runs one epoch on them.

    `Trainer` (``_loop``) extends it with the plan's phases, checkpoints and reports.
    """

    def __init__(self, plan: PhasePlan, context: EngineContext, rank: int, world_size: int) -> None:
        self.plan = plan.validate()
        self.context = context
        self.rank, self.world_size = rank, world_size
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
            self.data = place_data(self.data, self.device, context.data_on_device)
        self.shuffle = torch.Generator().manual_seed(plan.seed)

    def _batches(
        self, split: Split, shuffle: bool, generator: torch.Generator | None = None
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
        anchors: list[TaskAnchor],
    ) -> tuple[dict[str, float], dict[str, float]]:
        """One pass over this rank's shard, with EWC's penalty towards ``anchors`` when the
        phase asks; returns the metrics and the mean task losses."""
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
            if phase.ewc is not None and anchors:
                penalty = ewc_penalty(self.model.backbone, anchors, phase.ewc.strength)
                loss = loss + penalty
                penalty_sum += penalty.detach()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            average_grads(weighting.parameters(), self.world_size)
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
        totals = all_reduce_sum(
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

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Every task of the plan on the validation split, synced across ranks."""
        average_buffers(self.model, self.world_size)
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
        totals = all_reduce_sum([*loss_sums.values(), len(shard)], self.world_size)
        seen = max(totals[-1], 1)
        for task, total in zip(self.tasks, totals[:-1], strict=True):
            metrics[f"val/loss/{task}"] = total / seen
        metrics["val/loss"] = sum(metrics[f"val/loss/{task}"] for task in self.tasks)
        if "cls" in self.tasks:
            metrics["val/acc"] = metrics["val/cls_acc"]
        return metrics
