"""Progressive unfreezing: the transfer-learning document's ranges and its own recipe."""

from __future__ import annotations

from spaces.params import Categorical, Fixed, FloatRange, IntRange, When, lr_schedule_params
from spaces.strategy_space import Baseline, StrategySpace

__all__ = ["progressive_space"]


def progressive_space(num_groups: int) -> StrategySpace:
    """Phase lengths, unfreeze depth, base lr, its per-phase decay and the schedule inside
    each phase, batch, dropout.

    Args:
        num_groups: Layer groups of the backbone; phase 2 unfreezes 1 to
            ``num_groups - 1`` of them (phase 3 unfreezes all).
    """
    # "Unfreeze top 25-50% of layers in phase 2": the baseline takes the lower end,
    # as "layers 140+" of a 155-layer backbone is the top tenth.
    documented_depth = max(1, round(num_groups * 0.25))
    # Phases last 1-6 epochs, so a step schedule decays after 1-3 of them.
    schedule, schedule_conditions = lr_schedule_params(
        ("constant", "cosine", "step", "plateau", "one_cycle"), step_size=IntRange(1, 3)
    )
    # The phase lengths only count when no preset replaces them.
    by_hand = When("preset", None)
    return StrategySpace(
        strategy="progressive",
        params={
            # The document's epoch splits by data-set size (small, medium, large);
            # when set, a preset replaces the three phase lengths.
            "preset": Fixed(None),
            "frozen_epochs": IntRange(1, 5),
            "partial_epochs": IntRange(1, 5),
            "full_epochs": IntRange(1, 6),
            "unfreeze_depth": IntRange(1, max(1, num_groups - 1)),
            "base_lr": FloatRange(1e-4, 1e-2, log=True),
            "lr_decay": FloatRange(2.0, 20.0, log=True),
            **schedule,
            "batch_size": Categorical((32, 64)),
            "dropout": FloatRange(0.0, 0.5),
            # The head may learn faster than the pretrained layers below it.
            "head_lr_cls": FloatRange(0.3, 3.0, log=True),
        },
        conditions={
            "frozen_epochs": by_hand,
            "partial_epochs": by_hand,
            "full_epochs": by_hand,
            **schedule_conditions,
        },
        baselines=(
            Baseline(
                name="document: progressive 3+3+4",
                params={
                    "preset": None,
                    "frozen_epochs": 3,
                    "partial_epochs": 3,
                    "full_epochs": 4,
                    "unfreeze_depth": documented_depth,
                    "base_lr": 1e-3,
                    "lr_decay": 10.0,
                    "lr_schedule": "constant",
                    "batch_size": 32,
                    "dropout": 0.2,
                    "head_lr_cls": 1.0,
                },
                source="Phase 1: lr=0.001, base frozen, 3 epochs; Phase 2: lr=0.0001, layers 140+"
                " unfrozen, 3 epochs; Phase 3: lr=0.00001, all layers unfrozen, 4 epochs",
            ),
        ),
    )
