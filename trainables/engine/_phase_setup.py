"""What a phase trains and how: which groups and heads take gradients, their train or
eval mode, and the optimizer's parameter groups with each one's learning rate."""

from __future__ import annotations

import torch
from torch import nn

from trainables.models import TaskModel
from trainables.phases import Phase

__all__ = ["build_optimizer", "configure_phase", "lr_metrics", "set_train_mode"]


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


def lr_metrics(model: TaskModel, optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The learning rate of every layer group (0 for a frozen one), head and learned
    weighting, as reported: ``lr/group<k>``, ``lr/head/<task>``, ``lr/weighting``."""
    num_groups = len(model.layer_groups)
    lrs = {f"lr/group{k}": 0.0 for k in range(num_groups + 1)}
    for group in optimizer.param_groups:
        if group["group"] == "weighting":
            lrs["lr/weighting"] = group["lr"]
            continue
        lrs[f"lr/group{group['group']}"] = group["lr"]
        if "task" in group:
            lrs[f"lr/head/{group['task']}"] = group["lr"]
    return lrs
