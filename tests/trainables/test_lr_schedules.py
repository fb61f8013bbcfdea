"""Learning rates inside a phase: one_cycle per optimizer step, a linear warmup before
any kind, their validation, plan round trips and resume."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import pytest
import torch

from tests.conftest import TINY_CONTEXT
from trainables.data import iterate_task_batches, load_dataset
from trainables.engine import (
    CHECKPOINT_FILE,
    EngineContext,
    build_optimizer,
    configure_phase,
    run_plan,
)
from trainables.lr_schedules import PhaseLRSchedule, build_lr_scheduler, train_steps_per_epoch
from trainables.models import build_model
from trainables.phases import LRSchedule, Phase, PhasePlan, PlanError

# Without pretraining: these tests follow learning rates, not accuracy.
MODEL = dataclasses.replace(TINY_CONTEXT.model, pretrained=None)
#: 288 training samples in batches of 64: 5 steps an epoch, the last one short.
BATCH_SIZE = 64
STEPS_PER_EPOCH = 5


def _optimizer(phase: Phase) -> torch.optim.Optimizer:
    model = build_model(MODEL, 6, load_pretrained=False)
    return build_optimizer(model, phase, configure_phase(model, phase), 0.0)


def _group_lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    return [group["lr"] for group in optimizer.param_groups]


def _trajectory(
    phase: Phase, steps_per_epoch: int, val_losses: Sequence[float] | None = None
) -> torch.Tensor:
    """Each group's lr at every optimizer step of ``phase`` (steps x groups), driven the
    way the engine drives it."""
    optimizer = _optimizer(phase)
    schedule = PhaseLRSchedule(optimizer, phase, steps_per_epoch)
    seen = []
    for epoch in range(phase.epochs):
        for _ in range(steps_per_epoch):
            seen.append(_group_lrs(optimizer))
            optimizer.step()
            schedule.after_batch()
        schedule.after_epoch(val_losses[epoch] if val_losses is not None else 1.0)
    return torch.tensor(seen, dtype=torch.float64)


def _phase(schedule: LRSchedule, epochs: int = 4) -> Phase:
    # With layer_lr_decay each of the seven parameter groups has its own lr.
    return Phase("p", epochs, "all", 1e-2, lr_schedule=schedule, layer_lr_decay=0.5)


@pytest.mark.parametrize(("pct_start", "div", "final_div"), [(0.25, 10.0, 100.0), (0.5, 25.0, 1e4)])
def test_one_cycle_rises_to_each_groups_lr_then_anneals(pct_start, div, final_div):
    phase = _phase(LRSchedule("one_cycle", pct_start=pct_start, div=div, final_div=final_div))
    base = torch.tensor(_group_lrs(_optimizer(phase)), dtype=torch.float64)
    assert len(set(base.tolist())) == 7  # six backbone groups and the head
    lrs = _trajectory(phase, steps_per_epoch=10)
    total = 4 * 10
    peak = round(pct_start * total) - 1
    assert lrs.shape == (total, 7)
    torch.testing.assert_close(lrs[0], base / div)
    torch.testing.assert_close(lrs[peak], base)
    torch.testing.assert_close(lrs[-1], base / (div * final_div))
    assert (lrs.argmax(0) == peak).all()
    assert (lrs[1 : peak + 1] > lrs[:peak]).all()
    assert (lrs[peak + 1 :] < lrs[peak:-1]).all()
    # Every group follows the same curve, scaled by its own lr.
    torch.testing.assert_close(lrs / base, (lrs[:, -1:] / base[-1]).expand_as(lrs))


def test_one_cycle_cycles_adams_beta1_against_the_lr():
    phase = _phase(LRSchedule("one_cycle", pct_start=0.5))
    optimizer = _optimizer(phase)
    schedule = PhaseLRSchedule(optimizer, phase, steps_per_epoch=5)
    betas = []
    for _ in range(20):
        betas.append(optimizer.param_groups[0]["betas"][0])
        optimizer.step()
        schedule.after_batch()
    assert betas[0] == pytest.approx(0.95)
    assert betas[9] == pytest.approx(0.85)
    assert betas[-1] == pytest.approx(0.95)


@pytest.mark.parametrize(
    "schedule",
    [
        LRSchedule("constant", warmup_epochs=2),
        LRSchedule("cosine", final_lr=1e-5, warmup_epochs=2),
        LRSchedule("step", step_size=1, gamma=0.5, warmup_epochs=2),
        LRSchedule("plateau", factor=0.5, patience=0, warmup_epochs=2),
        LRSchedule("one_cycle", pct_start=0.3, warmup_epochs=2),
    ],
    ids=lambda schedule: schedule.kind,
)
def test_warmup_ramps_linearly_then_hands_over_to_the_schedule(schedule):
    phase = _phase(schedule, epochs=5)
    # Lower in the warmup than after it: a plateau that counted the warmup's epochs
    # would cut the lr as soon as the main schedule starts.
    val_losses = [0.5, 0.5, 1.0, 1.0, 1.0]
    lrs = _trajectory(phase, STEPS_PER_EPOCH, val_losses)
    unwarmed = dataclasses.replace(schedule, warmup_epochs=0)
    main = _trajectory(
        dataclasses.replace(phase, epochs=3, lr_schedule=unwarmed), STEPS_PER_EPOCH, val_losses[2:]
    )
    warmup_steps = 2 * STEPS_PER_EPOCH
    ramp = torch.arange(1, warmup_steps + 1, dtype=torch.float64)[:, None] / warmup_steps
    # (1/W .. 1) times where the main schedule starts, per group, one step at a time.
    torch.testing.assert_close(lrs[:warmup_steps], ramp * main[0])
    # Then exactly the schedule of a phase shorter by the warmup.
    assert torch.equal(lrs[warmup_steps:], main)
    if schedule.kind in ("cosine", "step", "plateau"):
        assert (main[-1] < main[0]).all()


def test_warmup_hands_cosine_the_remaining_epochs():
    phase = _phase(LRSchedule("cosine", final_lr=1e-5, warmup_epochs=1), epochs=3)
    lrs = _trajectory(phase, steps_per_epoch=2)
    top = lrs[:, -1].tolist()
    assert top == pytest.approx([5e-3, 1e-2, 1e-2, 1e-2, 1e-5, 1e-5])


@pytest.mark.parametrize("kind", ["constant", "cosine", "plateau", "one_cycle"])
def test_warmup_may_fill_the_whole_phase(kind):
    phase = _phase(LRSchedule(kind, warmup_epochs=3), epochs=3)
    base = torch.tensor(_group_lrs(_optimizer(phase)), dtype=torch.float64)
    lrs = _trajectory(phase, steps_per_epoch=4)
    ramp = torch.arange(1, 13, dtype=torch.float64)[:, None] / 12
    torch.testing.assert_close(lrs, ramp * base)


@pytest.mark.parametrize(("world_size", "batch_size"), [(1, 64), (1, 32), (2, 64), (3, 50), (5, 7)])
def test_steps_per_epoch_are_the_batches_every_rank_takes(world_size, batch_size):
    train = load_dataset(TINY_CONTEXT.data).train
    generator = torch.Generator().manual_seed(0)
    counts = {
        sum(
            1
            for _ in iterate_task_batches(
                train,
                batch_size,
                shuffle=True,
                generator=generator,
                rank=rank,
                world_size=world_size,
            )
        )
        for rank in range(world_size)
    }
    assert counts == {train_steps_per_epoch(len(train), batch_size, world_size)}


@pytest.mark.parametrize("steps", [3, 4, 9])
def test_one_cycle_on_few_steps_still_rises_then_falls(steps):
    # At pct_start 0.3, 3 to 6 steps would put the rise's end at step 0, where
    # OneCycleLR divides by zero: the rise takes two steps instead.
    phase = _phase(LRSchedule("one_cycle"), epochs=steps)
    optimizer = _optimizer(phase)
    schedule = PhaseLRSchedule(optimizer, phase, steps_per_epoch=1)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.after_batch()
    peak = lrs.index(max(lrs))
    assert 0 < peak < steps - 1 and lrs[0] < lrs[peak] > lrs[-1]


def test_one_cycle_on_two_steps_trains_at_the_phases_lr():
    phase = _phase(LRSchedule("one_cycle"), epochs=2)
    optimizer = _optimizer(phase)
    built = [group["lr"] for group in optimizer.param_groups]
    schedule = PhaseLRSchedule(optimizer, phase, steps_per_epoch=1)
    assert schedule.main is None
    assert [group["lr"] for group in optimizer.param_groups] == built


class _Reporter:
    """Keeps every report and checkpoint; raises after ``crash_after`` reports."""

    rank, world_size = 0, 1

    def __init__(self, resume_from: dict | None = None, crash_after: int | None = None) -> None:
        self.reports: list[dict] = []
        self.states: list[dict] = []
        self.resume_from = resume_from
        self.crash_after = crash_after

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        self.reports.append(dict(metrics))
        self.states.append(
            torch.load(os.path.join(checkpoint_dir, CHECKPOINT_FILE), weights_only=True)
        )
        if self.crash_after is not None and len(self.reports) >= self.crash_after:
            raise KeyboardInterrupt("simulated crash")

    def restore(self) -> dict | None:
        return self.resume_from


def _plan(*phases: Phase) -> PhasePlan:
    return PhasePlan(
        "custom", phases, model=MODEL, data=TINY_CONTEXT.data, batch_size=BATCH_SIZE
    ).validate()


CONTEXT = EngineContext(threads=1)


def test_engine_steps_the_schedule_per_batch_and_reports_epoch_start_lrs():
    phase = _phase(LRSchedule("one_cycle", warmup_epochs=1), epochs=3)
    reporter = _Reporter()
    run_plan(_plan(phase), CONTEXT, reporter)
    expected = _trajectory(phase, STEPS_PER_EPOCH)[::STEPS_PER_EPOCH]
    reported = [[r[f"lr/group{k}"] for k in range(7)] for r in reporter.reports]
    torch.testing.assert_close(torch.tensor(reported, dtype=torch.float64), expected)
    # One OneCycleLR step per optimizer step after the warmup: exactly its total.
    final = reporter.states[-1]["scheduler"]
    assert final["steps"] == 3 * STEPS_PER_EPOCH
    assert final["main"]["last_epoch"] == final["main"]["total_steps"] == 2 * STEPS_PER_EPOCH


def _comparable(report: dict) -> dict:
    return {name: value for name, value in report.items() if not name.startswith("time/")}


@pytest.mark.parametrize(
    ("schedule", "crash_after"),
    [
        (LRSchedule("one_cycle", warmup_epochs=2), 2),  # in phase 2's warmup
        (LRSchedule("one_cycle", warmup_epochs=2), 4),  # in its one cycle
        (LRSchedule("cosine", final_lr=1e-4, warmup_epochs=2), 3),  # as the warmup ends
        (LRSchedule("plateau", factor=0.5, patience=0, warmup_epochs=1), 3),
    ],
    ids=["one_cycle-mid-warmup", "one_cycle-after-warmup", "cosine-handover", "plateau"],
)
def test_resume_continues_the_same_lrs_and_metrics(schedule, crash_after):
    # Phase 1 warms up over all of its one epoch; phase 2 carries the schedule.
    head = Phase("head", 1, "none", 1e-2, lr_schedule=LRSchedule("cosine", warmup_epochs=1))
    plan = _plan(head, dataclasses.replace(_phase(schedule), name="all"))
    straight = _Reporter()
    run_plan(plan, CONTEXT, straight)
    crashed = _Reporter(crash_after=crash_after)
    with pytest.raises(KeyboardInterrupt):
        run_plan(plan, CONTEXT, crashed)
    resumed = _Reporter(resume_from=crashed.states[-1])
    run_plan(plan, CONTEXT, resumed)
    assert [_comparable(r) for r in resumed.reports] == [
        _comparable(r) for r in straight.reports[crash_after:]
    ]
    final_resumed, final_straight = resumed.states[-1], straight.states[-1]
    assert final_resumed["scheduler"] == final_straight["scheduler"]
    assert all(
        torch.equal(final_resumed["model"][name], value)
        for name, value in final_straight["model"].items()
    )


def test_a_checkpoint_from_before_warmups_still_resumes():
    phase = _phase(LRSchedule("step", step_size=1, gamma=0.5))
    optimizer = _optimizer(phase)
    old = build_lr_scheduler(optimizer, phase)
    optimizer.step()
    old.step()
    schedule = PhaseLRSchedule(_optimizer(phase), phase, STEPS_PER_EPOCH)
    schedule.load_state_dict(old.state_dict())
    assert schedule.main.last_epoch == 1


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        (LRSchedule(warmup_epochs=-1), r"warmup_epochs: must be between 0 and the phase's 2"),
        (LRSchedule("cosine", warmup_epochs=3), r"warmup_epochs: .* got 3$"),
        (LRSchedule("one_cycle", pct_start=0.0), r"pct_start: must be in \(0, 1\), got 0.0"),
        (LRSchedule("one_cycle", pct_start=1.0), r"pct_start: must be in \(0, 1\), got 1.0"),
        (LRSchedule("one_cycle", div=0.0), r"div: must be > 0, got 0.0"),
        (LRSchedule("one_cycle", final_div=-1.0), r"final_div: must be > 0"),
        (LRSchedule("one_cycle", div=float("nan")), r"div: must be > 0, got nan"),
    ],
)
def test_invalid_schedules_are_refused(schedule, message):
    plan = PhasePlan("custom", (Phase("p", 2, "all", 1e-3, lr_schedule=schedule),), model=MODEL)
    with pytest.raises(PlanError, match=r"^phases\[0\] \(p\)\.lr_schedule\." + message):
        plan.validate()


@pytest.mark.parametrize(
    "schedule",
    [
        LRSchedule("cosine", warmup_epochs=2),
        LRSchedule("one_cycle", pct_start=0.4, div=10.0, final_div=100.0, warmup_epochs=0),
        # Only one_cycle reads pct_start, div and final_div.
        LRSchedule("constant", pct_start=0.0, div=0.0),
    ],
)
def test_valid_schedules_pass(schedule):
    PhasePlan("custom", (Phase("p", 2, "all", 1e-3, lr_schedule=schedule),), model=MODEL).validate()


def test_plans_round_trip_the_schedule_and_old_dicts_load():
    schedule = LRSchedule("one_cycle", pct_start=0.4, div=10.0, final_div=100.0, warmup_epochs=1)
    plan = _plan(_phase(schedule))
    raw = plan.to_dict()
    assert raw["phases"][0]["lr_schedule"] == {
        **dataclasses.asdict(LRSchedule()),
        "kind": "one_cycle",
        "pct_start": 0.4,
        "div": 10.0,
        "final_div": 100.0,
        "warmup_epochs": 1,
    }
    assert PhasePlan.from_dict(raw) == plan
    # A plan written before these fields existed gets their defaults.
    for name in ("pct_start", "div", "final_div", "warmup_epochs"):
        del raw["phases"][0]["lr_schedule"][name]
    raw["phases"][0]["lr_schedule"]["kind"] = "cosine"
    old = PhasePlan.from_dict(raw).phases[0].lr_schedule
    assert old == LRSchedule("cosine")
