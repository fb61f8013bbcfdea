"""Joint multi-task training: the multi-task document's recipe and its recommendations."""

from __future__ import annotations

from typing import Any

from spaces.params import Categorical, FloatRange, IntRange, Param, When, lr_schedule_params
from spaces.strategy_space import Baseline, StrategySpace
from trainables.strategies import MULTITASK_TASKS, WARMUP_STYLES, WEIGHTING_PARAM_NAMES

__all__ = ["joint_space", "multitask_params"]

#: The document's own run; the recommended variants below change a few of these.
_DOCUMENT: dict[str, Any] = {
    "warmup_style": "alternate",
    "warmup_epochs": 5,
    "joint_epochs": 40,
    "finetune_epochs": 5,
    "finetune_lr_factor": 1.0,
    "lr": 1e-3,
    "lr_schedule": "constant",
    "weighting": "loss_ratio",
    "alpha": 0.5,
    "momentum": 0.0,
    "early_stopping_patience": 0,
    **{f"head_lr_{task}": 1.0 for task in MULTITASK_TASKS},
    "label_smoothing": 0.0,
    "focal_gamma": 0.0,
    "batch_size": 32,
    "dropout": 0.2,
    "weight_decay": 0.0,
}


def multitask_params() -> dict[str, Param]:
    """Domains the multi-task strategies share: task-specific head lrs (multipliers of
    ``lr``), label smoothing, focal loss, batch, dropout, weight decay."""
    return {
        **{f"head_lr_{task}": FloatRange(0.3, 3.0, log=True) for task in MULTITASK_TASKS},
        "label_smoothing": FloatRange(0.0, 0.2),
        "focal_gamma": FloatRange(0.0, 3.0),
        "batch_size": Categorical((16, 32, 64)),
        "dropout": FloatRange(0.0, 0.5),
        "weight_decay": FloatRange(0.0, 0.05),
    }


def joint_space(num_groups: int) -> StrategySpace:
    """Warmup style and lengths, joint and fine-tune phases, lr and schedule, task
    weighting, early stopping, task-specific lrs and loss variants."""
    del num_groups  # every phase trains the whole backbone
    schedule, schedule_conditions = lr_schedule_params(
        ("constant", "cosine", "step", "one_cycle"), step_size=IntRange(5, 20)
    )
    task_specific = When("warmup_style", "per_task", "gradual")
    return StrategySpace(
        strategy="joint",
        params={
            "warmup_style": Categorical(WARMUP_STYLES),
            "warmup_epochs": IntRange(0, 15),
            **{f"warmup_{task}": IntRange(0, 15) for task in MULTITASK_TASKS},
            # The document recommends 100-200 epochs; 60 keeps the scheduler's horizon
            # (the longest plan) within a laptop's reach at a scaled budget.
            "joint_epochs": IntRange(5, 60),
            "finetune_epochs": IntRange(0, 15),
            "finetune_lr_factor": FloatRange(0.01, 1.0, log=True),
            "lr": FloatRange(1e-4, 1e-2, log=True),
            **schedule,
            "weighting": Categorical(tuple(WEIGHTING_PARAM_NAMES)),
            # alpha < 0 gives the larger loss the larger weight (see loss_ratio_weights).
            "alpha": FloatRange(-1.0, 1.0),
            "momentum": FloatRange(0.0, 0.9),
            "temperature": FloatRange(0.5, 5.0, log=True),
            "early_stopping_patience": IntRange(0, 10),
            **multitask_params(),
        },
        conditions={
            "warmup_epochs": When("warmup_style", "alternate"),
            **{f"warmup_{task}": task_specific for task in MULTITASK_TASKS},
            **schedule_conditions,
            **{name: _weighting_takes(name) for name in ("alpha", "momentum", "temperature")},
        },
        baselines=_baselines(),
    )


def _weighting_takes(param: str) -> When:
    """Active under the weighting methods that take ``param``."""
    methods = (method for method, taken in WEIGHTING_PARAM_NAMES.items() if param in taken)
    return When("weighting", *methods)


def _variant(drop: tuple[str, ...] = (), **changes: Any) -> dict[str, Any]:
    """The document's run with ``drop`` (parameters no longer active) removed and ``changes``."""
    return {**{k: v for k, v in _DOCUMENT.items() if k not in drop}, **changes}


def _baselines() -> tuple[Baseline, ...]:
    return (
        Baseline(
            name="document: joint 5/40/5",
            params=dict(_DOCUMENT),
            source="Warmup Phase (5 epochs): Individual task training; Joint Training Phase"
            " (40 epochs): Simultaneous training of all tasks; Fine-tuning Phase (5 epochs):"
            " Balanced performance optimization; Fixed at 1e-3 throughout training;"
            " Formula: weight_i = (avg_loss / task_loss_i)^0.5"
            " (batch size, dropout and weight decay not given: 32, 0.2 and 0 assumed)",
        ),
        Baseline(
            name="recommended: cosine to 1e-5, warmup 10, early stopping, lower-lr fine-tune",
            params=_variant(
                warmup_epochs=10,
                joint_epochs=60,
                lr_schedule="cosine",
                final_lr=1e-5,
                early_stopping_patience=5,
                finetune_lr_factor=0.1,
            ),
            source="Train for 100-200 epochs; Implement early stopping on validation set;"
            " Cosine annealing or step decay; Lower final learning rate (1e-5);"
            " Longer warmup (10-15 epochs)"
            " (60 joint epochs, the space's top, stand in for 100-200; patience 5 and a"
            " fine-tune lr of 0.1x assumed)",
        ),
        Baseline(
            name="recommended: validation weights with momentum, gradual warmup",
            params=_variant(
                drop=("warmup_epochs", "alpha"),
                warmup_style="gradual",
                warmup_seg=5,
                warmup_det=5,
                warmup_cls=5,
                weighting="validation",
                temperature=1.0,
                momentum=0.5,
            ),
            source="Use validation performance for weights; Add momentum to weight updates;"
            " Gradual transition to joint training; Longer warmup (10-15 epochs)"
            " (5 epochs per joining task, momentum 0.5 and temperature 1 assumed)",
        ),
        Baseline(
            name="recommended: uncertainty weighting, task-specific lrs and warmup lengths",
            params=_variant(
                drop=("warmup_epochs", "alpha", "momentum"),
                warmup_style="per_task",
                warmup_seg=3,
                warmup_det=2,
                warmup_cls=5,
                weighting="uncertainty",
                head_lr_seg=1.5,
                head_lr_cls=2.0,
            ),
            source="Consider uncertainty-based weighting; Task-specific learning rates;"
            " Task-specific warmup lengths (the values assumed: the longest warmup and"
            " highest head lr for classification, the task furthest from its target, the"
            " shortest warmup for detection, the only task that met it)",
        ),
        Baseline(
            name="recommended: label smoothing + focal loss",
            params=_variant(label_smoothing=0.1, focal_gamma=2.0),
            source="Use label smoothing; Implement focal loss variants"
            " (smoothing 0.1 and the focal-loss paper's gamma 2 assumed; the rest as the"
            " document's run)",
        ),
    )
