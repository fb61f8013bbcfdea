"""The built-in strategies: functions ``(params, context) -> PhasePlan``.

A strategy only decides the phases; the engine runs them all the same way. The
parameter names here are the ones the search spaces sample and the exported
best-config files carry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from trainables.phases import (
    EarlyStopping,
    EWCSpec,
    LRSchedule,
    Phase,
    PhasePlan,
    PlanError,
    WeightingSpec,
)
from trainables.strategies._context import PlanContext
from trainables.strategies._params import (
    JointParams,
    ProgressiveParams,
    ScheduleParams,
    SequentialParams,
    SinglePhaseParams,
    StrategyParams,
    required,
)
from trainables.weighting import WEIGHTING_PARAMS

__all__ = [
    "BUILTIN_STRATEGIES",
    "MULTITASK_TASKS",
    "PROGRESSIVE_PRESETS",
    "WARMUP_STYLES",
    "WEIGHTING_PARAM_NAMES",
    "joint",
    "progressive",
    "sequential",
    "single_phase",
]

#: The transfer-learning document's epoch splits by data-set size (frozen, partial,
#: full). "Large" gives 20-50 epochs in total; 5+10+15 sits inside that range.
PROGRESSIVE_PRESETS: dict[str, tuple[int, int, int]] = {
    "small": (3, 2, 2),
    "medium": (3, 3, 4),
    "large": (5, 10, 15),
}

#: The multi-task document's tasks, in the order it reports them.
MULTITASK_TASKS: tuple[str, ...] = ("seg", "det", "cls")

#: How the joint strategy warms up: tasks trained individually, step by step in turn
#: ("alternate"); one phase per task ("per_task"); or tasks joining one at a time
#: ("gradual").
WARMUP_STYLES: tuple[str, ...] = ("alternate", "per_task", "gradual")

#: The parameters each task-weighting method takes, read from ``trainables.weighting``
#: (their one home, with their defaults), in the order the joint space offers them.
WEIGHTING_PARAM_NAMES: dict[str, tuple[str, ...]] = {
    method: tuple(WEIGHTING_PARAMS[method])
    for method in ("equal", "loss_ratio", "dwa", "validation", "uncertainty")
}

_EQUAL = WeightingSpec("equal")


def _early_stopping(params: StrategyParams) -> EarlyStopping | None:
    patience = params.early_stopping_patience
    if patience is None or patience <= 0:
        return None
    return EarlyStopping(patience=patience, metric="val/loss", mode="min")


def _lr_schedule(
    params: ScheduleParams, lr: float, default: str, context: PlanContext
) -> LRSchedule:
    """The schedule ``params.lr_schedule`` names (``default`` if none) for a phase at ``lr``,
    from that kind's fields of ``params``; ``lr_warmup_epochs`` puts a linear warmup in
    front of any kind."""
    kind = params.lr_schedule or default
    # Counted in epochs, so scaled like the phase; 0 stays 0 (no warmup).
    warmup = context.optional_epochs(params.lr_warmup_epochs)
    if kind == "cosine":
        # A phase that starts below final_lr (late progressive phases) stays at its lr
        # instead of annealing upwards.
        return LRSchedule(kind, final_lr=min(params.final_lr, lr), warmup_epochs=warmup)
    if kind == "step":
        # Scaled like the phase, so a shortened phase still decays as often.
        return LRSchedule(
            kind,
            step_size=context.epochs(required(params.step_size, "step_size")),
            gamma=params.step_gamma,
            warmup_epochs=warmup,
        )
    if kind == "plateau":
        return LRSchedule(
            kind,
            factor=params.plateau_factor,
            patience=params.plateau_patience,
            warmup_epochs=warmup,
        )
    if kind == "one_cycle":
        return LRSchedule(
            kind,
            pct_start=params.one_cycle_pct_start,
            div=params.one_cycle_div,
            final_div=params.one_cycle_final_div,
            warmup_epochs=warmup,
        )
    return LRSchedule(kind, warmup_epochs=warmup)


def progressive(raw: Mapping[str, Any], context: PlanContext) -> PhasePlan:
    """Frozen backbone, then the top ``unfreeze_depth`` groups, then everything.

    Each phase's lr is the previous one divided by ``lr_decay`` (the document: 10x).

    Params:
        frozen_epochs, partial_epochs, full_epochs: Phase lengths, or ``preset``
            (``small``/``medium``/``large``) for the document's splits.
        unfreeze_depth: Backbone layer groups, from the top, that train in phase 2.
        base_lr: Phase 1 learning rate. lr_decay: Divisor between phases.
        lr_schedule: Inside every phase (default ``constant``, the document's), with
            final_lr, step_size, step_gamma, plateau_factor, plateau_patience.
        head_lr_cls: Multiplier of the classifier head's lr (default 1).
        batch_size, dropout, weight_decay, early_stopping_patience (0 = off).
    """
    params = ProgressiveParams.read(raw)
    if params.preset is not None:
        if params.preset not in PROGRESSIVE_PRESETS:
            raise PlanError(
                f"preset: use one of {', '.join(PROGRESSIVE_PRESETS)}, got {params.preset!r}"
            )
        frozen, partial, full = PROGRESSIVE_PRESETS[params.preset]
    else:
        frozen, partial, full = (
            required(params.frozen_epochs, "frozen_epochs"),
            required(params.partial_epochs, "partial_epochs"),
            required(params.full_epochs, "full_epochs"),
        )
    base_lr, decay = params.base_lr, params.lr_decay
    if decay <= 0:
        raise PlanError(f"lr_decay: must be > 0, got {decay}")
    stopping = _early_stopping(params)
    stages = (
        ("frozen", frozen, "none", base_lr),
        ("partial", partial, params.unfreeze_depth, base_lr / decay),
        ("full", full, "all", base_lr / decay**2),
    )
    phases = tuple(
        Phase(
            name,
            context.epochs(epochs),
            trainable,
            lr,
            lr_schedule=_lr_schedule(params, lr, "constant", context),
            early_stopping=stopping,
            head_lr=_active(params.head_lr(), ("cls",)),
        )
        for name, epochs, trainable, lr in stages
    )
    return _plan("progressive", phases, params, context)


def single_phase(raw: Mapping[str, Any], context: PlanContext) -> PhasePlan:
    """All layers train from the start with ReduceLROnPlateau and early stopping.

    Params:
        epochs, lr, lr_schedule (default ``plateau``, the document's) with
        plateau_factor, plateau_patience, final_lr, step_size, step_gamma;
        early_stopping_patience (0 = off), batch_size, dropout, weight_decay;
        head_lr_cls (multiplier of the classifier head's lr, default 1).
    """
    params = SinglePhaseParams.read(raw)
    phase = Phase(
        "end_to_end",
        context.epochs(params.epochs),
        "all",
        params.lr,
        lr_schedule=_lr_schedule(params, params.lr, "plateau", context),
        early_stopping=_early_stopping(params),
        head_lr=_active(params.head_lr(), ("cls",)),
    )
    return _plan("single_phase", (phase,), params, context)


def joint(raw: Mapping[str, Any], context: PlanContext) -> PhasePlan:
    """The multi-task document's strategy: warmup, joint training of all tasks, fine-tune.

    The document: 5 epochs of warmup with tasks trained individually, 40 joint epochs
    weighted by ``(mean_j L_j / L_i) ** 0.5``, 5 balanced fine-tuning epochs, lr 1e-3
    throughout. Every phase trains the whole backbone.

    Params:
        warmup_style: ``alternate`` (the default; one ``warmup_epochs`` phase, each step trains one
            task in turn), ``per_task`` (``warmup_seg``/``warmup_det``/``warmup_cls``
            epochs of each task alone) or ``gradual`` (phase k trains the first k tasks
            jointly for ``warmup_<task k>`` epochs). A length of 0 skips that warmup.
        joint_epochs, lr, lr_schedule (default ``constant``) with final_lr, step_size,
            step_gamma: the joint phase.
        weighting (default ``loss_ratio``) with alpha, momentum, temperature: the joint
            phase's task weighting, also used by gradual phases of two or more tasks.
        early_stopping_patience (0 = off): the joint phase stops on ``val/loss``.
        finetune_epochs (0 skips), finetune_lr_factor (default 1): equal weighting at
            ``lr * finetune_lr_factor``.
        head_lr_seg, head_lr_det, head_lr_cls: Multipliers of the heads' lr.
        label_smoothing, focal_gamma, batch_size, dropout, weight_decay.
    """
    params = JointParams.read(raw)
    lr = params.lr
    head_lr = params.head_lr()
    weighting = _weighting(params)
    phases = _warmup(params, weighting, head_lr, context)
    phases.append(
        Phase(
            "joint",
            context.epochs(params.joint_epochs),
            "all",
            lr,
            lr_schedule=_lr_schedule(params, lr, "constant", context),
            tasks=MULTITASK_TASKS,
            weighting=weighting,
            early_stopping=_early_stopping(params),
            head_lr=head_lr,
        )
    )
    finetune = context.optional_epochs(_count(params.finetune_epochs, "finetune_epochs"))
    if finetune:
        phases.append(
            Phase(
                "finetune",
                finetune,
                "all",
                lr * params.finetune_lr_factor,
                tasks=MULTITASK_TASKS,
                weighting=_EQUAL,
                head_lr=head_lr,
            )
        )
    return _plan("joint", tuple(phases), params, context)


def sequential(raw: Mapping[str, Any], context: PlanContext) -> PhasePlan:
    """One task after another, the baseline the multi-task document replaced.

    The document reports catastrophic forgetting (a >90% drop on earlier tasks) and
    that elastic weight consolidation (EWC) was tried and dropped.

    Params:
        order: Tasks comma-separated, e.g. ``"seg,det,cls"`` (the default).
        task_epochs: Each task's phase length.
        lr, lr_schedule (default ``constant``) with final_lr, step_size, step_gamma:
            every phase, the schedule restarting with each task.
        use_ewc, ewc_lambda, fisher_batches (default 20): EWC towards the earlier tasks
            in every phase after the first.
        head_lr_seg, head_lr_det, head_lr_cls, label_smoothing, focal_gamma,
        batch_size, dropout, weight_decay.
    """
    params = SequentialParams.read(raw)
    order = tuple(task.strip() for task in params.order.split(","))
    if len(set(order)) != len(order):
        raise PlanError(f"order: name each task once, got {params.order!r}")
    lr = params.lr
    epochs = context.epochs(params.task_epochs)
    ewc = (
        EWCSpec(required(params.ewc_lambda, "ewc_lambda"), params.fisher_batches)
        if params.use_ewc
        else None
    )
    head_lr = params.head_lr()
    phases = tuple(
        Phase(
            f"task/{task}",
            epochs,
            "all",
            lr,
            lr_schedule=_lr_schedule(params, lr, "constant", context),
            tasks=(task,),
            ewc=ewc if i > 0 else None,
            head_lr=_active(head_lr, (task,)),
        )
        for i, task in enumerate(order)
    )
    return _plan("sequential", phases, params, context)


def _warmup(
    params: JointParams,
    weighting: WeightingSpec,
    head_lr: Mapping[str, float],
    context: PlanContext,
) -> list[Phase]:
    style, lr = params.warmup_style, params.lr
    if style not in WARMUP_STYLES:
        raise PlanError(f"warmup_style: use one of {', '.join(WARMUP_STYLES)}, got {style!r}")
    if style == "alternate":
        epochs = context.optional_epochs(_count(params.warmup_epochs, "warmup_epochs"))
        if not epochs:
            return []
        return [
            Phase(
                "warmup",
                epochs,
                "all",
                lr,
                tasks=MULTITASK_TASKS,
                task_sampling="alternate",
                head_lr=head_lr,
            )
        ]
    phases = []
    for k, task in enumerate(MULTITASK_TASKS, start=1):
        name = f"warmup_{task}"
        epochs = context.optional_epochs(_count(getattr(params, name), name))
        if not epochs:
            continue
        tasks = (task,) if style == "per_task" else MULTITASK_TASKS[:k]
        phases.append(
            Phase(
                f"warmup/{task}" if style == "per_task" else f"warmup/+{task}",
                epochs,
                "all",
                lr,
                tasks=tasks,
                # One task needs no weighting; a learned one would rescale its loss.
                weighting=weighting if len(tasks) > 1 else _EQUAL,
                head_lr=_active(head_lr, tasks),
            )
        )
    return phases


def _count(value: int | None, name: str) -> int:
    """A phase length where 0 means the phase is skipped."""
    value = required(value, name)
    if value < 0:
        raise PlanError(f"{name}: must be >= 0 (0 skips the phase), got {value}")
    return value


def _weighting(params: JointParams) -> WeightingSpec:
    method = params.weighting
    if method not in WEIGHTING_PARAM_NAMES:
        raise PlanError(f"weighting: use one of {', '.join(WEIGHTING_PARAM_NAMES)}, got {method!r}")
    given = params.weighting_params
    return WeightingSpec(
        method, {name: given[name] for name in WEIGHTING_PARAM_NAMES[method] if name in given}
    )


def _active(head_lr: Mapping[str, float], tasks: tuple[str, ...]) -> dict[str, float]:
    """The multipliers of the heads that train in a phase (a phase names only its own)."""
    return {task: factor for task, factor in head_lr.items() if task in tasks}


def _plan(
    strategy: str, phases: tuple[Phase, ...], params: StrategyParams, context: PlanContext
) -> PhasePlan:
    model = context.model
    if params.dropout is not None:
        model = dataclasses.replace(model, dropout=params.dropout)
    return PhasePlan(
        strategy=strategy,
        phases=phases,
        model=model,
        data=context.data,
        batch_size=params.batch_size,
        seed=context.seed,
        weight_decay=params.weight_decay,
        label_smoothing=params.label_smoothing,
        focal_gamma=params.focal_gamma,
    ).validate()


StrategyFn = Callable[[Mapping[str, Any], PlanContext], PhasePlan]

#: Built-in strategies by the name an experiment file and the search space use.
BUILTIN_STRATEGIES: dict[str, StrategyFn] = {
    "progressive": progressive,
    "single_phase": single_phase,
    "joint": joint,
    "sequential": sequential,
}
