"""Elastic weight consolidation (Kirkpatrick et al. 2017) for sequential task training.

After a task's phase, the diagonal Fisher information of the shared backbone's
parameters says how much each weight mattered to that task; later phases pay
``strength / 2 * sum_i F_i * (theta_i - theta*_i) ** 2`` for moving it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["TaskAnchor", "ewc_penalty", "estimate_fisher"]


@dataclasses.dataclass
class TaskAnchor:
    """What EWC remembers of one earlier task: its weights and their Fisher."""

    task: str
    weights: dict[str, torch.Tensor]
    fisher: dict[str, torch.Tensor]

    def to_state(self) -> dict[str, Any]:
        return {"task": self.task, "weights": self.weights, "fisher": self.fisher}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], device: torch.device) -> TaskAnchor:
        return cls(
            task=state["task"],
            weights={k: v.to(device) for k, v in state["weights"].items()},
            fisher={k: v.to(device) for k, v in state["fisher"].items()},
        )


def estimate_fisher(
    module: nn.Module,
    task: str,
    batches: Iterable[tuple[torch.Tensor, Mapping[str, torch.Tensor]]],
    loss_fn: Callable[[torch.Tensor, Mapping[str, torch.Tensor]], torch.Tensor],
    world_size: int = 1,
) -> TaskAnchor:
    """Diagonal empirical Fisher of ``module``'s parameters for ``task``.

    Squared gradients of the task's mini-batch loss, averaged over ``batches``
    (the batch-gradient approximation: one backward pass per batch instead of
    one per sample). Under DDP every rank estimates on its shard and the ranks
    average, so every worker anchors to the same Fisher.

    Args:
        module: The shared parameters to protect (the backbone).
        task: The task the Fisher describes.
        batches: Training batches of (images, targets).
        loss_fn: ``(images, targets) -> loss`` of ``task`` through the whole model.
        world_size: DDP world size; > 1 averages the estimate across ranks.
    """
    params = dict(module.named_parameters())
    fisher = {name: torch.zeros_like(p) for name, p in params.items()}
    # Every parameter needs a gradient here, frozen or not: the Fisher describes
    # the weights, not what the last phase happened to train.
    was_trainable = {name: p.requires_grad for name, p in params.items()}
    for p in params.values():
        p.requires_grad_(True)
    count = 0
    try:
        for images, targets in batches:
            module.zero_grad(set_to_none=True)
            loss_fn(images, targets).backward()
            for name, p in params.items():
                if p.grad is not None:
                    fisher[name] += p.grad.detach() ** 2
            count += 1
    finally:
        module.zero_grad(set_to_none=True)
        for name, p in params.items():
            p.requires_grad_(was_trainable[name])
    if world_size > 1:
        counts = torch.tensor([float(count)], device=next(iter(fisher.values())).device)
        dist.all_reduce(counts)
        for value in fisher.values():
            dist.all_reduce(value)
        count = int(counts.item())
    for value in fisher.values():
        value /= max(count, 1)
    weights = {name: p.detach().clone() for name, p in params.items()}
    return TaskAnchor(task=task, weights=weights, fisher=fisher)


def ewc_penalty(module: nn.Module, anchors: Iterable[TaskAnchor], strength: float) -> torch.Tensor:
    """``strength / 2 * sum over anchors and parameters of F * (theta - theta*)**2``."""
    params = dict(module.named_parameters())
    total = torch.zeros((), device=next(iter(params.values())).device)
    for anchor in anchors:
        for name, fisher in anchor.fisher.items():
            total = total + (fisher * (params[name] - anchor.weights[name]) ** 2).sum()
    return 0.5 * strength * total
