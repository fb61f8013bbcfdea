"""Task-loss weighting: how the losses of the active tasks combine into one.

Every method sits behind :class:`TaskWeighting`. Epoch-level methods (``loss_ratio``,
``dwa``, ``validation``) fix their weights in :meth:`TaskWeighting.end_epoch` from values
that every DDP rank receives already averaged, so all ranks train with the same weights
without communicating; ``uncertainty`` learns its weights as parameters whose gradients
the engine averages like the model's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from trainables.loss_ratio import loss_ratio_weights, usable_losses
from trainables.phases import WeightingSpec

__all__ = [
    "DWAWeighting",
    "EqualWeighting",
    "LossRatioWeighting",
    "TaskWeighting",
    "UncertaintyWeighting",
    "ValidationWeighting",
    "WEIGHTING_METHODS",
    "WEIGHTING_PARAMS",
    "build_weighting",
    "check_weighting",
    "loss_ratio_weights",
]


def _in_unit_interval(value: float) -> str | None:
    return None if -1.0 <= value <= 1.0 else "must be in [-1, 1]"


def _momentum_range(value: float) -> str | None:
    return None if 0.0 <= value < 1.0 else "must be in [0, 1)"


def _positive(value: float) -> str | None:
    return None if value > 0.0 else "must be > 0"


#: Range check per parameter name; returns what is wrong, or None.
_PARAM_RULES: dict[str, Callable[[float], str | None]] = {
    "alpha": _in_unit_interval,
    "momentum": _momentum_range,
    "temperature": _positive,
}


def _check_params(method: str, defaults: Mapping[str, float], params: Mapping[str, Any]) -> None:
    for name, value in params.items():
        field = f"weighting.params.{name}"
        if name not in defaults:
            hint = f"use {', '.join(defaults)}" if defaults else "it takes no parameters"
            raise ValueError(f"{field}: unknown for method {method!r}; {hint}")
        # bool is an int to Python, but `alpha: true` in a file is a mistake, not 1.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{field}: must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{field}: must be finite, got {value!r}")
        problem = _PARAM_RULES[name](float(value))
        if problem is not None:
            raise ValueError(f"{field}: {problem}, got {value!r}")


def _scaled_softmax(values: Sequence[float], temperature: float) -> list[float]:
    """``K * softmax(values / temperature)``: weights that sum to the number of tasks."""
    scaled = [value / temperature for value in values]
    top = max(scaled)  # shifting by the maximum keeps exp from overflowing
    exps = [math.exp(value - top) for value in scaled]
    total = sum(exps)
    return [len(values) * e / total for e in exps]


class TaskWeighting:
    """Combines per-task losses into one training loss; subclasses decide the weights.

    Attributes:
        tasks: Task names; every tensor of weights follows this order.
        params: The method's parameters, defaults filled in.
    """

    #: Name in :data:`WEIGHTING_METHODS` and in configuration files.
    method: ClassVar[str]
    #: Every parameter the method accepts, with its default.
    defaults: ClassVar[Mapping[str, float]] = {}

    def __init__(self, tasks: Sequence[str], params: Mapping[str, float] | None = None) -> None:
        params = dict(params or {})
        _check_params(self.method, self.defaults, params)
        if not tasks:
            raise ValueError("weighting: needs at least one task")
        self.tasks: tuple[str, ...] = tuple(tasks)
        self.params: dict[str, float] = {
            name: float(params.get(name, default)) for name, default in self.defaults.items()
        }

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        """Current weights, shape ``(K,)`` in ``self.tasks`` order, detached.

        Args:
            losses: This step's task losses, shape ``(K,)``; gives device and dtype.
        """
        raise NotImplementedError

    def combine(self, losses: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted total loss (with grad) and the weights used (detached)."""
        stacked = torch.stack([losses[task] for task in self.tasks])
        weights = self.weights(stacked.detach())
        return (weights * stacked).sum(), weights

    def end_epoch(
        self, mean_losses: Mapping[str, float], val_scores: Mapping[str, float] | None = None
    ) -> None:
        """Update epoch-level weights; called once per epoch by every rank.

        Args:
            mean_losses: The epoch's mean training loss per task, averaged over ranks.
            val_scores: Validation score per task in [0, 1], higher is better, or None.
        """

    def parameters(self) -> list[nn.Parameter]:
        """Learned weighting parameters, for the optimizer; ``[]`` for most methods."""
        return []

    def to(self, device: torch.device | str) -> TaskWeighting:
        """Move learned parameters to ``device`` in place; returns ``self``.

        In place, so an optimizer that already holds them keeps training them.
        """
        for param in self.parameters():
            param.data = param.data.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        """What the method remembers, as values ``torch.load(weights_only=True)`` accepts."""
        return {"tasks": list(self.tasks)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Raises:
            ValueError: The state belongs to other tasks.
        """
        if tuple(state["tasks"]) != self.tasks:
            raise ValueError(
                f"weighting state is for tasks {list(state['tasks'])}, not {list(self.tasks)}"
            )


class EqualWeighting(TaskWeighting):
    """Every active task weighs 1."""

    method = "equal"

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(losses)


class _EpochWeighting(TaskWeighting):
    """Weights fixed at epoch ends, 1 until the first update, blended with momentum:
    ``new = momentum * previous + (1 - momentum) * fresh``."""

    def __init__(self, tasks: Sequence[str], params: Mapping[str, float] | None = None) -> None:
        super().__init__(tasks, params)
        self._weights = [1.0] * len(self.tasks)
        # One tensor per epoch on the training device, not a host-to-device copy per step.
        self._cached: torch.Tensor | None = None

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        cached = self._cached
        if cached is None or cached.device != losses.device or cached.dtype != losses.dtype:
            cached = torch.tensor(self._weights, dtype=losses.dtype, device=losses.device)
            self._cached = cached
        return cached

    def _update(self, fresh: Sequence[float]) -> None:
        momentum = self.params["momentum"]
        self._weights = [
            momentum * old + (1.0 - momentum) * new
            for old, new in zip(self._weights, fresh, strict=True)
        ]
        self._cached = None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "weights": list(self._weights)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._weights = [float(weight) for weight in state["weights"]]
        self._cached = None


class LossRatioWeighting(_EpochWeighting):
    """The multi-task document's dynamic weights, ``w_i = (mean_j L_j / L_i) ** alpha``.

    Computed from the epoch's mean losses (see :func:`loss_ratio_weights`) and used during
    the next epoch. An epoch with a zero or non-finite loss keeps the previous weights.
    """

    method = "loss_ratio"
    defaults = {"alpha": 0.5, "momentum": 0.0}

    def end_epoch(
        self, mean_losses: Mapping[str, float], val_scores: Mapping[str, float] | None = None
    ) -> None:
        losses = [float(mean_losses[task]) for task in self.tasks]
        if usable_losses(losses):
            self._update(loss_ratio_weights(losses, self.params["alpha"]))


class DWAWeighting(_EpochWeighting):
    """Dynamic Weight Average (Liu et al., 2019).

    ``w_i = K * exp(r_i / T) / sum_j exp(r_j / T)`` with ``r_i = L_i(t-1) / L_i(t-2)``:
    tasks whose loss falls slowest get more weight. Weights are 1 for the first two
    epochs, before two losses exist; the paper uses ``T = 2``.
    """

    method = "dwa"
    defaults = {"temperature": 2.0, "momentum": 0.0}

    def __init__(self, tasks: Sequence[str], params: Mapping[str, float] | None = None) -> None:
        super().__init__(tasks, params)
        self._history: list[list[float]] = []

    def end_epoch(
        self, mean_losses: Mapping[str, float], val_scores: Mapping[str, float] | None = None
    ) -> None:
        self._history = [*self._history, [float(mean_losses[task]) for task in self.tasks]][-2:]
        if len(self._history) < 2:
            return
        before, last = self._history
        if usable_losses(before) and usable_losses(last):
            ratios = [now / then for now, then in zip(last, before, strict=True)]
            self._update(_scaled_softmax(ratios, self.params["temperature"]))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "history": [list(losses) for losses in self._history]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._history = [[float(loss) for loss in losses] for losses in state["history"]]


class ValidationWeighting(_EpochWeighting):
    """Weights from validation performance: tasks further from good get more weight.

    ``w_i = K * softmax((1 - score_i) / temperature)``; the weights sum to K. Equal until
    scores arrive; an epoch whose scores are missing, incomplete or not finite keeps the
    previous weights.
    """

    method = "validation"
    defaults = {"temperature": 1.0, "momentum": 0.0}

    def end_epoch(
        self, mean_losses: Mapping[str, float], val_scores: Mapping[str, float] | None = None
    ) -> None:
        if val_scores is None or any(task not in val_scores for task in self.tasks):
            return
        scores = [float(val_scores[task]) for task in self.tasks]
        if all(math.isfinite(score) for score in scores):
            gaps = [1.0 - score for score in scores]
            self._update(_scaled_softmax(gaps, self.params["temperature"]))


class UncertaintyWeighting(TaskWeighting):
    """Homoscedastic uncertainty weighting (Kendall et al., 2018) with learned log-variances.

    ``total = sum_i exp(-s_i) * L_i + s_i``, ``s_i`` starting at 0. Kendall's regression
    form ``0.5 * exp(-s) * L + 0.5 * s`` has the same optimum, ``s_i = log(L_i)`` (weight
    ``1 / L_i``), but halves the total at the start; this form keeps ``total == L`` for a
    single task at ``s = 0``, so switching methods does not rescale the loss. Losses must
    be positive: the optimum does not exist for ``L_i <= 0``. ``weights()`` is ``exp(-s)``.
    """

    method = "uncertainty"

    def __init__(self, tasks: Sequence[str], params: Mapping[str, float] | None = None) -> None:
        super().__init__(tasks, params)
        self.log_vars = nn.Parameter(torch.zeros(len(self.tasks)))

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        return torch.exp(-self.log_vars.detach())

    def combine(self, losses: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        stacked = torch.stack([losses[task] for task in self.tasks])
        precision = torch.exp(-self.log_vars)
        return (precision * stacked).sum() + self.log_vars.sum(), precision.detach()

    def parameters(self) -> list[nn.Parameter]:
        return [self.log_vars]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "log_vars": self.log_vars.detach().cpu().clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        # In place, so an optimizer already holding the parameter keeps training it.
        with torch.no_grad():
            self.log_vars.copy_(state["log_vars"])


WEIGHTING_METHODS: dict[str, type[TaskWeighting]] = {
    cls.method: cls
    for cls in (
        EqualWeighting,
        LossRatioWeighting,
        ValidationWeighting,
        DWAWeighting,
        UncertaintyWeighting,
    )
}

#: Each method's parameters with their defaults.
WEIGHTING_PARAMS: dict[str, dict[str, float]] = {
    name: dict(cls.defaults) for name, cls in WEIGHTING_METHODS.items()
}


def check_weighting(spec: WeightingSpec) -> None:
    """Validate a weighting's method and parameters without building it.

    Raises:
        ValueError: One line naming the field, what is wrong and what is accepted.
    """
    if spec.method not in WEIGHTING_METHODS:
        raise ValueError(
            f"weighting.method: unknown method {spec.method!r};"
            f" use one of {', '.join(WEIGHTING_METHODS)}"
        )
    _check_params(spec.method, WEIGHTING_PARAMS[spec.method], spec.params)


def build_weighting(spec: WeightingSpec, tasks: Sequence[str]) -> TaskWeighting:
    """The weighting ``spec`` describes, for ``tasks`` in this order.

    Raises:
        ValueError: As :func:`check_weighting`, or ``tasks`` is empty.
    """
    check_weighting(spec)
    return WEIGHTING_METHODS[spec.method](tasks, spec.params)
