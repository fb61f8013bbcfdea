"""Phase plans: the data that every strategy produces and the one engine runs."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

from trainables.data_spec import DataSpec

__all__ = [
    "EWCSpec",
    "EarlyStopping",
    "LRSchedule",
    "ModelSpec",
    "Phase",
    "PhasePlan",
    "PlanError",
    "PretrainSpec",
    "Trainable",
    "WeightingSpec",
]

LR_SCHEDULES = ("constant", "cosine", "step", "plateau", "one_cycle")

#: How a phase's active tasks share a step: "joint" sums their weighted losses;
#: "alternate" trains one task per step in turn (tasks trained individually).
TASK_SAMPLING = ("joint", "alternate")

#: How much of the backbone trains in a phase: "none", "all", or the number of
#: layer groups counted from the top (output side).
Trainable = int | Literal["all", "none"]


class PlanError(ValueError):
    """A phase plan that cannot run; the message names the field and the fix."""


@dataclasses.dataclass(frozen=True)
class LRSchedule:
    """Learning-rate schedule inside one phase.

    Attributes:
        kind: ``constant``, ``cosine`` (anneal to ``final_lr``), ``step`` (multiply by
            ``gamma`` every ``step_size`` epochs), ``plateau`` (multiply by ``factor``
            after ``patience`` epochs without improvement of ``val/loss``), all stepped
            once per epoch, or ``one_cycle`` (torch's OneCycleLR, stepped per
            optimizer step: from ``lr / div`` up to ``lr`` over ``pct_start`` of the
            steps, then cosine down to ``lr / (div * final_div)``).
        pct_start: one_cycle: share of the steps spent rising, in (0, 1).
        div: one_cycle: the first step's lr is ``lr / div``.
        final_div: one_cycle: the last step's lr is ``lr / (div * final_div)``.
        warmup_epochs: Any kind: over the phase's first ``warmup_epochs`` epochs the lr
            rises linearly per optimizer step to where ``kind`` starts; ``kind`` then
            runs over the remaining epochs as if the phase were that much shorter.
    """

    kind: str = "constant"
    final_lr: float = 0.0
    step_size: int = 1
    gamma: float = 0.1
    factor: float = 0.1
    patience: int = 2
    pct_start: float = 0.3
    div: float = 25.0
    final_div: float = 1.0e4
    warmup_epochs: int = 0


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Stop a phase when ``metric`` has not improved for ``patience`` epochs."""

    patience: int
    metric: str = "val/loss"
    mode: str = "min"
    #: Restore the weights of the best epoch when the phase stops.
    restore_best: bool = True


@dataclasses.dataclass(frozen=True)
class WeightingSpec:
    """How the losses of the active tasks are combined (one task: plain loss)."""

    method: str = "equal"
    params: Mapping[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class EWCSpec:
    """Elastic weight consolidation against the tasks of earlier phases.

    Attributes:
        strength: The penalty's lambda: ``strength / 2 * sum F_i (theta_i - theta*_i)**2``.
        fisher_batches: Training batches the diagonal Fisher of each earlier task is
            estimated from, at the end of the phase that trained it.
    """

    strength: float
    fisher_batches: int = 20


@dataclasses.dataclass(frozen=True)
class Phase:
    """One phase of a training strategy.

    Attributes:
        name: Shown in logs and TensorBoard.
        epochs: Planned epochs; early stopping may end the phase sooner.
        trainable: Backbone layer groups that train, counted from the top, or
            ``"all"``/``"none"``. Heads of the active tasks always train.
        lr: Learning rate of the top of the network at the start of the phase.
        lr_schedule: How ``lr`` changes over the phase's epochs.
        layer_lr_decay: Discriminative learning rates: each layer group below the
            head gets this factor more (``lr * decay**depth``); None keeps one lr.
        tasks: Tasks whose losses train in this phase.
        weighting: How the active tasks' losses are combined.
        ewc: Elastic weight consolidation towards earlier tasks, or None.
        early_stopping: Per-phase early stopping, or None.
        head_lr: Multiplier of ``lr`` for a task's head (task-specific lrs); 1 if absent.
        task_sampling: "joint" (every step trains all active tasks) or "alternate"
            (each step trains one active task, in turn).
    """

    name: str
    epochs: int
    trainable: Trainable
    lr: float
    lr_schedule: LRSchedule = LRSchedule()
    layer_lr_decay: float | None = None
    tasks: tuple[str, ...] = ("cls",)
    weighting: WeightingSpec = WeightingSpec()
    ewc: EWCSpec | None = None
    early_stopping: EarlyStopping | None = None
    head_lr: Mapping[str, float] = dataclasses.field(default_factory=dict)
    task_sampling: str = "joint"

    def trainable_groups(self, num_groups: int) -> list[int]:
        """Indices (input side = 0) of the backbone groups that train in this phase."""
        if self.trainable == "all":
            return list(range(num_groups))
        if self.trainable == "none":
            return []
        depth = min(int(self.trainable), num_groups)
        return list(range(num_groups - depth, num_groups))


@dataclasses.dataclass(frozen=True)
class PretrainSpec:
    """How the backbone is pretrained on the synthetic source task (cached by value)."""

    data: DataSpec = DataSpec(kind="synthetic_source", num_samples=8000, num_classes=20)
    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 64
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Backbone and heads.

    Attributes:
        backbone: ``small_cnn`` (built in), ``torchvision:<name>`` (the optional
            torchvision extra, built with ``weights=None``) or ``factory``.
        width: small_cnn only: channels of the first layer group; deeper groups double it.
        num_groups: Layer groups of the backbone, ordered input to output; for other
            backbones, how many groups ``trainables.backbones.layer_groups`` makes.
        dropout: Dropout before each head's classifier.
        pretrained: Pretraining on the source task, or None for random init.
        weights: Local state-dict file loaded into the network as built (classifier
            included); it replaces pretraining. Never downloaded.
        strict_weights: Refuse a weights file whose keys or shapes differ from the
            network's; False loads what fits and logs the rest.
        factory: ``"package.module:function"`` building the network when
            ``backbone`` is ``factory``, called with ``factory_args`` as keywords.
        factory_args: Keyword arguments of the factory.
        blocks: Dotted path of the container whose children are the blocks.
        groups: The layer groups named outright (comma-separated module paths each).
    """

    backbone: str = "small_cnn"
    width: int = 16
    num_groups: int = 6
    dropout: float = 0.2
    pretrained: PretrainSpec | None = PretrainSpec()
    weights: str | None = None
    strict_weights: bool = True
    factory: str | None = None
    factory_args: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    blocks: str | None = None
    groups: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True)
class PhasePlan:
    """An ordered list of phases plus everything needed to run them.

    A plan is data: it is built by a strategy, validated here, sent to every worker
    as a dict, exported with the best trial and trained again from that file.
    """

    strategy: str
    phases: tuple[Phase, ...]
    model: ModelSpec = ModelSpec()
    data: DataSpec = DataSpec()
    batch_size: int = 64
    seed: int = 0
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    #: Focusing parameter of the focal variant of the cls/seg losses; 0 is cross-entropy.
    focal_gamma: float = 0.0

    @property
    def total_epochs(self) -> int:
        return sum(phase.epochs for phase in self.phases)

    @property
    def tasks(self) -> tuple[str, ...]:
        """Every task any phase trains, in first-use order."""
        seen: dict[str, None] = {}
        for phase in self.phases:
            seen.update(dict.fromkeys(phase.tasks))
        return tuple(seen)

    def phase_boundaries(self) -> list[int]:
        """Global epoch (1-based, inclusive) at which each phase ends as planned."""
        ends, total = [], 0
        for phase in self.phases:
            total += phase.epochs
            ends.append(total)
        return ends

    def validate(self) -> PhasePlan:
        """Raise PlanError naming the first field that cannot run; return self."""
        if not self.phases:
            raise PlanError("phases: a plan needs at least one phase")
        if self.batch_size < 1:
            raise PlanError(f"batch_size: must be >= 1, got {self.batch_size}")
        for i, phase in enumerate(self.phases):
            where = f"phases[{i}] ({phase.name})"
            if phase.epochs < 1:
                raise PlanError(f"{where}.epochs: must be >= 1, got {phase.epochs}")
            if not phase.lr > 0:
                raise PlanError(f"{where}.lr: must be > 0, got {phase.lr}")
            if isinstance(phase.trainable, str):
                if phase.trainable not in ("all", "none"):
                    raise PlanError(
                        f"{where}.trainable: use 'all', 'none' or a number of layer groups,"
                        f" got {phase.trainable!r}"
                    )
            elif not 0 <= phase.trainable <= self.model.num_groups:
                raise PlanError(
                    f"{where}.trainable: the backbone has {self.model.num_groups} layer groups,"
                    f" so unfreeze between 0 and {self.model.num_groups}, got {phase.trainable}"
                )
            schedule = phase.lr_schedule
            if schedule.kind not in LR_SCHEDULES:
                raise PlanError(
                    f"{where}.lr_schedule.kind: use one of {', '.join(LR_SCHEDULES)},"
                    f" got {schedule.kind!r}"
                )
            if not 0 <= schedule.warmup_epochs <= phase.epochs:
                raise PlanError(
                    f"{where}.lr_schedule.warmup_epochs: must be between 0 and the phase's"
                    f" {phase.epochs} epochs, got {schedule.warmup_epochs}"
                )
            if schedule.kind == "one_cycle":
                if not 0 < schedule.pct_start < 1:
                    raise PlanError(
                        f"{where}.lr_schedule.pct_start: must be in (0, 1),"
                        f" got {schedule.pct_start}"
                    )
                for name in ("div", "final_div"):
                    if not getattr(schedule, name) > 0:
                        raise PlanError(
                            f"{where}.lr_schedule.{name}: must be > 0,"
                            f" got {getattr(schedule, name)}"
                        )
            if phase.layer_lr_decay is not None and not 0 < phase.layer_lr_decay <= 1:
                raise PlanError(
                    f"{where}.layer_lr_decay: must be in (0, 1], got {phase.layer_lr_decay}"
                )
            if not phase.tasks:
                raise PlanError(f"{where}.tasks: a phase needs at least one task")
            available = self.data.tasks
            for task in phase.tasks:
                if task not in available:
                    raise PlanError(
                        f"{where}.tasks: {self.data.kind} data has tasks"
                        f" {', '.join(available)}, not {task!r}"
                    )
            for task, factor in phase.head_lr.items():
                if task not in phase.tasks or not factor > 0:
                    raise PlanError(
                        f"{where}.head_lr.{task}: give a positive multiplier for an active task"
                    )
            if phase.task_sampling not in TASK_SAMPLING:
                raise PlanError(
                    f"{where}.task_sampling: use one of {', '.join(TASK_SAMPLING)},"
                    f" got {phase.task_sampling!r}"
                )
            if phase.ewc is not None and (phase.ewc.strength < 0 or phase.ewc.fisher_batches < 1):
                raise PlanError(
                    f"{where}.ewc: strength must be >= 0 and fisher_batches >= 1,"
                    f" got {phase.ewc.strength} and {phase.ewc.fisher_batches}"
                )
        if not 0 <= self.label_smoothing < 1:
            raise PlanError(f"label_smoothing: must be in [0, 1), got {self.label_smoothing}")
        if self.focal_gamma < 0:
            raise PlanError(f"focal_gamma: must be >= 0, got {self.focal_gamma}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (YAML/JSON/Ray-safe) that ``from_dict`` reads back."""
        plan = dataclasses.asdict(self)
        for phase in plan["phases"]:
            phase["tasks"] = list(phase["tasks"])
            phase["weighting"]["params"] = dict(phase["weighting"]["params"])
            phase["head_lr"] = dict(phase["head_lr"])
        plan["phases"] = list(plan["phases"])
        plan["model"]["factory_args"] = dict(plan["model"]["factory_args"])
        if plan["model"]["groups"] is not None:
            plan["model"]["groups"] = list(plan["model"]["groups"])
        return plan

    @classmethod
    def from_dict(cls, plan: Mapping[str, Any]) -> PhasePlan:
        model = dict(plan.get("model", {}))
        pretrained = model.get("pretrained", PretrainSpec())
        if isinstance(pretrained, Mapping):
            pretrained = dict(pretrained)
            pretrained["data"] = DataSpec(**pretrained.get("data", {}))
            pretrained = PretrainSpec(**pretrained)
        model["pretrained"] = pretrained
        if model.get("groups") is not None:
            model["groups"] = tuple(model["groups"])
        model["factory_args"] = dict(model.get("factory_args") or {})
        phases = []
        for raw in plan["phases"]:
            phase = dict(raw)
            phase["lr_schedule"] = LRSchedule(**phase.get("lr_schedule", {}))
            phase["weighting"] = WeightingSpec(**phase.get("weighting", {}))
            phase["tasks"] = tuple(phase.get("tasks", ("cls",)))
            if phase.get("early_stopping") is not None:
                phase["early_stopping"] = EarlyStopping(**phase["early_stopping"])
            if phase.get("ewc") is not None:
                phase["ewc"] = EWCSpec(**phase["ewc"])
            phase["head_lr"] = dict(phase.get("head_lr", {}))
            phases.append(Phase(**phase))
        return cls(
            strategy=plan["strategy"],
            phases=tuple(phases),
            model=ModelSpec(**model),
            data=DataSpec(**plan.get("data", {})),
            batch_size=plan.get("batch_size", 64),
            seed=plan.get("seed", 0),
            weight_decay=plan.get("weight_decay", 0.0),
            label_smoothing=plan.get("label_smoothing", 0.0),
            focal_gamma=plan.get("focal_gamma", 0.0),
        )
