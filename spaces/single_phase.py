"""Single-phase fine-tuning: the transfer-learning document's ranges and its own recipe."""

from __future__ import annotations

from spaces.params import Categorical, FloatRange, IntRange, lr_schedule_params
from spaces.strategy_space import Baseline, StrategySpace

__all__ = ["single_phase_space"]


def single_phase_space(num_groups: int) -> StrategySpace:
    """Epochs, lr and its schedule (the document's ReduceLROnPlateau, or cosine, step,
    constant), early stopping, batch, dropout."""
    del num_groups  # every layer trains from the start
    schedule, schedule_conditions = lr_schedule_params(
        ("plateau", "cosine", "step", "constant", "one_cycle"), step_size=IntRange(5, 20)
    )
    return StrategySpace(
        strategy="single_phase",
        params={
            "epochs": IntRange(30, 50),
            "lr": FloatRange(1e-5, 1e-3, log=True),
            **schedule,
            "early_stopping_patience": IntRange(3, 8),
            "batch_size": Categorical((32, 64)),
            "dropout": FloatRange(0.3, 0.5),
            # The head may learn faster than the pretrained layers below it.
            "head_lr_cls": FloatRange(0.3, 3.0, log=True),
        },
        conditions=schedule_conditions,
        baselines=(
            Baseline(
                name="document: single-phase",
                params={
                    "epochs": 40,
                    "lr": 1e-4,
                    "lr_schedule": "plateau",
                    "plateau_factor": 0.1,
                    "plateau_patience": 2,
                    "early_stopping_patience": 5,
                    "batch_size": 32,
                    "dropout": 0.4,
                    "head_lr_cls": 1.0,
                },
                source="Single phase: lr=0.0001, all layers trainable, 30-50 epochs;"
                " ReduceLROnPlateau; early stopping; higher dropout (0.3-0.5)",
            ),
        ),
    )
