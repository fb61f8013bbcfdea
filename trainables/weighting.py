"""Task-loss weighting: one interface, ``weights(losses, state) -> tensor``."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from trainables.phases import WeightingSpec

__all__ = ["EqualWeighting", "TaskWeighting", "WEIGHTING_METHODS", "build_weighting"]


class TaskWeighting:
    """Combines per-task losses into one; subclasses decide the weights.

    ``state`` carries what a method remembers between epochs (loss history,
    momentum) so that it survives a checkpoint.
    """

    def __init__(self, tasks: tuple[str, ...], params: Mapping[str, float]) -> None:
        self.tasks = tasks
        self.params = dict(params)
        self.state: dict[str, object] = {}

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        """Weights for ``losses`` (one entry per task, in ``self.tasks`` order)."""
        raise NotImplementedError

    def combine(self, losses: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted total loss and the weights used."""
        stacked = torch.stack([losses[task] for task in self.tasks])
        weights = self.weights(stacked.detach())
        return (weights * stacked).sum(), weights

    def end_epoch(self, mean_losses: Mapping[str, float]) -> None:  # noqa: B027
        """Called once per epoch with the epoch's mean training losses."""


class EqualWeighting(TaskWeighting):
    """Every active task weighs 1."""

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(losses)


WEIGHTING_METHODS: dict[str, type[TaskWeighting]] = {"equal": EqualWeighting}


def build_weighting(spec: WeightingSpec, tasks: tuple[str, ...]) -> TaskWeighting:
    if spec.method not in WEIGHTING_METHODS:
        raise ValueError(
            f"weighting.method: unknown method {spec.method!r};"
            f" use one of {', '.join(WEIGHTING_METHODS)}"
        )
    return WEIGHTING_METHODS[spec.method](tasks, spec.params)
