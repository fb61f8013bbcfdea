"""The phase engine on tiny data: which weights train, lrs, metrics, checkpoints, resume."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch

from analysis.targets import NSL
from tests.conftest import TINY_CONTEXT, TINY_PROGRESSIVE
from trainables.engine import (
    CHECKPOINT_FILE,
    CHECKPOINT_REPORTS_FILE,
    EngineContext,
    build_optimizer,
    configure_phase,
    eval_batch_size,
    run_plan,
)
from trainables.engine._tracking import EarlyStopState
from trainables.lr_schedules import build_lr_scheduler
from trainables.models import build_model
from trainables.phases import EarlyStopping, LRSchedule, Phase, PhasePlan
from trainables.strategies import build_plan


class RecordingReporter:
    """Keeps every report and the model weights of every checkpoint."""

    rank, world_size = 0, 1

    def __init__(self, resume_from: dict | None = None, crash_after: int | None = None) -> None:
        self.reports: list[dict] = []
        self.states: list[dict] = []
        self.checkpoint_reports: list[list[dict]] = []
        self.resume_from = resume_from
        self.crash_after = crash_after

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        self.reports.append(dict(metrics))
        state = torch.load(os.path.join(checkpoint_dir, CHECKPOINT_FILE), weights_only=True)
        self.states.append(state)
        with open(os.path.join(checkpoint_dir, CHECKPOINT_REPORTS_FILE)) as file:
            self.checkpoint_reports.append(json.load(file))
        if self.crash_after is not None and len(self.reports) >= self.crash_after:
            raise KeyboardInterrupt("simulated crash")

    def restore(self) -> dict | None:
        return self.resume_from


def _group_tensors(state: dict, group: int) -> dict[str, torch.Tensor]:
    prefix = f"backbone.layer_groups.{group}."
    return {k: v for k, v in state.items() if k.startswith(prefix)}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def progressive_run():
    plan = build_plan("progressive", TINY_PROGRESSIVE, TINY_CONTEXT)
    torch.manual_seed(plan.seed)
    initial = build_model(plan.model, 6).state_dict()
    reporter = RecordingReporter()
    run_plan(plan, EngineContext(targets=NSL.targets, threads=1), reporter)
    return plan, initial, reporter


def test_each_checkpoint_carries_every_report_up_to_it(progressive_run):
    _, _, reporter = progressive_run
    assert reporter.checkpoint_reports == [reporter.reports[: i + 1] for i in range(3)]
    assert [r["epoch"] for r in reporter.checkpoint_reports[-1]] == [1, 2, 3]
    # and in the state a resumed run continues them from
    assert reporter.states[1]["reports"] == reporter.reports[:2]


def test_progressive_trains_exactly_the_planned_groups(progressive_run):
    plan, initial, reporter = progressive_run
    frozen, partial, full = (state["model"] for state in reporter.states)
    num_groups = plan.model.num_groups
    for group in range(num_groups):
        # Phase 1: the whole backbone is frozen - weights and BatchNorm statistics.
        assert _same(_group_tensors(frozen, group), _group_tensors(initial, group)), group
        # Phase 2: only the top 2 groups train; the others, BN stats included, hold.
        moved = not _same(_group_tensors(partial, group), _group_tensors(frozen, group))
        assert moved == (group >= num_groups - 2), group
        # Phase 3: every group trains.
        assert not _same(_group_tensors(full, group), _group_tensors(partial, group)), group
    head = "heads.cls.linear.weight"
    assert not torch.equal(frozen[head], initial[head])


def test_progressive_reports_phase_lrs_and_metrics(progressive_run):
    plan, _, reporter = progressive_run
    top = f"lr/group{plan.model.num_groups}"
    assert [r["phase"] for r in reporter.reports] == [1, 2, 3]
    assert [r["plan_progress"] for r in reporter.reports] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert [r["epoch"] for r in reporter.reports] == [1, 2, 3]
    assert [r[top] for r in reporter.reports] == pytest.approx([3e-3, 3e-4, 3e-5])
    assert [r["lr/group0"] for r in reporter.reports] == pytest.approx([0.0, 0.0, 3e-5])
    assert [r["lr/group5"] for r in reporter.reports] == pytest.approx([0.0, 3e-4, 3e-5])
    for report in reporter.reports:
        for name in ("val/acc", "val/loss", "train/loss/cls", "weight/cls", "target_score"):
            assert name in report
        assert 0.0 <= report["val/acc"] <= 1.0
    assert reporter.reports[-1]["plan_complete"] == 1
    assert reporter.reports[0]["plan_complete"] == 0
    assert reporter.reports[0]["trainable_params"] < reporter.reports[2]["trainable_params"]


def test_checkpoint_records_phase_and_epoch(progressive_run):
    _, _, reporter = progressive_run
    positions = [state["position"] for state in reporter.states]
    assert positions[0] == {"phase_index": 0, "epoch_in_phase": 1, "global_epoch": 1}
    assert positions[1] == {"phase_index": 1, "epoch_in_phase": 1, "global_epoch": 2}


def test_training_lowers_the_loss():
    params = dict(TINY_PROGRESSIVE, frozen_epochs=1, partial_epochs=1, full_epochs=6)
    plan = build_plan("progressive", params, TINY_CONTEXT)
    plan = dataclasses.replace(
        plan, phases=tuple(dataclasses.replace(p, lr=3e-3) for p in plan.phases)
    )
    reporter = RecordingReporter()
    run_plan(plan, EngineContext(targets=NSL.targets, threads=1), reporter)
    losses = [r["train/loss"] for r in reporter.reports]
    assert losses[-1] < 0.85 * losses[0]


def test_resume_continues_at_the_right_phase_and_epoch():
    params = dict(TINY_PROGRESSIVE, frozen_epochs=2, partial_epochs=2, full_epochs=1)
    plan = build_plan("progressive", params, TINY_CONTEXT)
    context = EngineContext(targets=NSL.targets, threads=1)
    crashed = RecordingReporter(crash_after=3)
    with pytest.raises(KeyboardInterrupt):
        run_plan(plan, context, crashed)
    resumed = RecordingReporter(resume_from=crashed.states[-1])
    run_plan(plan, context, resumed)
    assert [(r["phase"], r["epoch"], r["epoch_in_phase"]) for r in resumed.reports] == [
        (2, 4, 2),
        (3, 5, 1),
    ]
    # Its checkpoints list every report of the run, those before the crash included.
    assert [r["epoch"] for r in resumed.checkpoint_reports[-1]] == [1, 2, 3, 4, 5]
    # An uninterrupted run gives the same weights: the resume lost nothing.
    straight = RecordingReporter()
    run_plan(plan, context, straight)
    final_resumed, final_straight = resumed.states[-1]["model"], straight.states[-1]["model"]
    assert all(
        torch.allclose(final_resumed[k].float(), final_straight[k].float()) for k in final_straight
    )


def test_single_phase_restores_best_weights_and_reports_them():
    params = {
        "epochs": 6,
        "lr": 3e-2,  # high enough that val/loss gets worse and early stopping fires
        "plateau_factor": 0.5,
        "plateau_patience": 10,
        "early_stopping_patience": 1,
        "batch_size": 32,
        "dropout": 0.3,
    }
    plan = build_plan("single_phase", params, TINY_CONTEXT)
    reporter = RecordingReporter()
    run_plan(plan, EngineContext(targets=NSL.targets, threads=1), reporter)
    last = reporter.reports[-1]
    assert last["plan_complete"] == 1
    best_loss = min(r["val/loss"] for r in reporter.reports[:-1])
    if last.get("restored_epoch"):
        assert last["val/loss"] == pytest.approx(best_loss, rel=1e-5)
    if last.get("early_stopped"):
        # It stopped at an epoch that did not improve on the best before it, which
        # may be the phase's last.
        epochs = [r for r in reporter.reports if r["epoch"] <= last["epoch"]]
        stopped = [r for r in epochs if r["epoch"] == last["epoch"]][0]
        assert stopped["val/loss"] >= min(r["val/loss"] for r in epochs if r is not stopped)


def test_early_stopping_counts_patience():
    rule = EarlyStopping(patience=2, metric="val/loss", mode="min", restore_best=False)
    state = EarlyStopState()
    model = torch.nn.Linear(1, 1)
    decisions = [
        state.update(rule, {"val/loss": loss}, model, epoch)
        for epoch, loss in enumerate([1.0, 0.8, 0.9, 0.85], start=1)
    ]
    assert decisions == [False, False, False, True]
    assert state.best_epoch == 2


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        (LRSchedule("constant"), [1e-2, 1e-2, 1e-2, 1e-2]),
        (LRSchedule("cosine", final_lr=1e-5), [1e-2, 7.5025e-3, 2.5075e-3, 1e-5]),
        (LRSchedule("step", step_size=2, gamma=0.1), [1e-2, 1e-2, 1e-3, 1e-3]),
    ],
)
def test_lr_schedules_over_a_phase(schedule, expected):
    model = build_model(TINY_CONTEXT.model, 6, load_pretrained=False)
    phase = Phase("p", 4, "all", 1e-2, lr_schedule=schedule)
    groups = configure_phase(model, phase)
    optimizer = build_optimizer(model, phase, groups, 0.0)
    scheduler = build_lr_scheduler(optimizer, phase)
    seen = []
    for _ in range(4):
        seen.append(optimizer.param_groups[-1]["lr"])
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    assert seen == pytest.approx(expected, rel=1e-3)


def test_layer_lr_decay_gives_lower_groups_smaller_lrs():
    model = build_model(TINY_CONTEXT.model, 6, load_pretrained=False)
    phase = Phase("p", 1, "all", 1e-2, layer_lr_decay=0.5)
    groups = configure_phase(model, phase)
    optimizer = build_optimizer(model, phase, groups, 0.0)
    lrs = {group["group"]: group["lr"] for group in optimizer.param_groups}
    assert lrs[6] == pytest.approx(1e-2)
    assert lrs[5] == pytest.approx(5e-3)
    assert lrs[0] == pytest.approx(1e-2 * 0.5**6)


def test_frozen_groups_keep_batchnorm_in_eval_mode():
    from trainables.engine import set_train_mode

    model = build_model(TINY_CONTEXT.model, 6, load_pretrained=False)
    groups = configure_phase(model, Phase("p", 1, 2, 1e-3))
    set_train_mode(model, groups)
    modes = [group.training for group in model.layer_groups]
    assert modes == [False, False, False, False, True, True]
    assert model.heads["cls"].training


def test_diverging_run_fails_with_a_clear_reason():
    plan = PhasePlan(
        strategy="single_phase",
        phases=(Phase("p", 2, "all", 1e30),),
        model=TINY_CONTEXT.model,
        data=TINY_CONTEXT.data,
    )
    with pytest.raises(FloatingPointError, match="diverged"):
        run_plan(plan, EngineContext(targets=NSL.targets, threads=1), RecordingReporter())


@pytest.mark.parametrize(
    ("image_size", "batch_size", "expected"), [(32, 32, 256), (224, 32, 32), (112, 16, 83)]
)
def test_evaluation_batches_shrink_with_the_image_size(image_size, batch_size, expected):
    assert eval_batch_size(image_size, batch_size) == expected
