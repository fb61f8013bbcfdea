"""What keeps N DDP workers one run: sums over ranks, the per-phase DDP wrapper, the
state DDP itself does not synchronise, and a check that it did.

Every helper is a no-op (or returns its input) with one worker, so the single-process
path runs no collective and needs no process group.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from trainables.models import TaskModel
from trainables.phases import Phase

__all__ = ["all_reduce_sum", "average_buffers", "average_grads", "param_divergence", "wrap"]


def all_reduce_sum(values: list[float], world_size: int) -> list[float]:
    """``values`` summed element-wise over every rank."""
    if world_size == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def wrap(model: TaskModel, phase: Phase, device: torch.device, world_size: int) -> nn.Module:
    """The module to train ``phase``: ``model`` itself, or a DDP wrapper of it.

    DDP is built anew every phase: it only synchronises the parameters that
    required grad when it was constructed, so a wrapper from the frozen phase
    would leave newly unfrozen groups training apart on each worker.
    """
    if world_size == 1:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    # Alternating steps leave the other active heads without gradients.
    return DistributedDataParallel(
        model,
        device_ids=device_ids,
        find_unused_parameters=phase.task_sampling == "alternate" and len(phase.tasks) > 1,
    )


def average_buffers(model: nn.Module, world_size: int) -> None:
    """Average BatchNorm running statistics over ranks.

    DDP hands rank 0's buffers to every rank at the start of each forward, but
    the last training step still updates each rank's copy from its own batch;
    without this, every rank would evaluate its shard with different statistics
    and the checkpoint (rank 0's) would not be the model that was scored.
    """
    if world_size == 1:
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer /= world_size


def average_grads(params: Iterable[nn.Parameter], world_size: int) -> None:
    """Average the gradients of parameters that live outside DDP (learned task
    weights); otherwise each rank would learn its own."""
    if world_size == 1:
        return
    for param in params:
        if param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad /= world_size


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
