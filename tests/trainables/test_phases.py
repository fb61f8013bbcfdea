"""PhasePlan validation names the field and the fix."""

from __future__ import annotations

import pytest

from tests.conftest import TINY_CONTEXT
from trainables.phases import LRSchedule, Phase, PhasePlan, PlanError


def _plan(*phases: Phase) -> PhasePlan:
    return PhasePlan("custom", phases, model=TINY_CONTEXT.model, data=TINY_CONTEXT.data)


@pytest.mark.parametrize(
    ("phase", "message"),
    [
        (Phase("p", 0, "all", 1e-3), r"phases\[0\] \(p\).epochs: must be >= 1"),
        (Phase("p", 1, "all", 0.0), r"lr: must be > 0"),
        (Phase("p", 1, 7, 1e-3), "the backbone has 6 layer groups"),
        (Phase("p", 1, "top", 1e-3), "use 'all', 'none' or a number"),
        (Phase("p", 1, "all", 1e-3, lr_schedule=LRSchedule("linear")), "lr_schedule.kind"),
        (Phase("p", 1, "all", 1e-3, layer_lr_decay=2.0), "layer_lr_decay: must be in"),
        (Phase("p", 1, "all", 1e-3, tasks=()), "at least one task"),
    ],
)
def test_invalid_phases_are_refused(phase, message):
    with pytest.raises(PlanError, match=message):
        _plan(phase).validate()


def test_empty_plan_is_refused():
    with pytest.raises(PlanError, match="at least one phase"):
        _plan().validate()


def test_trainable_groups_count_from_the_top():
    assert Phase("p", 1, 2, 1e-3).trainable_groups(6) == [4, 5]
    assert Phase("p", 1, "none", 1e-3).trainable_groups(6) == []
    assert Phase("p", 1, "all", 1e-3).trainable_groups(3) == [0, 1, 2]
