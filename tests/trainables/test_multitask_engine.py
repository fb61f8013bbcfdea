"""The phase engine on multi-task plans: active tasks per phase, weighting, EWC,
forgetting, the best weights per task, and resuming mid-plan."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from analysis.targets import MULTITASK
from tests.conftest import TINY_MODEL
from tests.trainables.test_engine import RecordingReporter, _same
from trainables.data import DataSpec
from trainables.engine import TASK_METRICS, EngineContext, run_plan
from trainables.launch import train_locally
from trainables.phases import EWCSpec, PhasePlan
from trainables.strategies import PlanContext, build_plan

TINY_SCENES = DataSpec(kind="synthetic_scenes", num_samples=240, image_size=16, num_classes=4)
SCENE_CONTEXT = PlanContext(model=TINY_MODEL, data=TINY_SCENES, seed=0)
TASKS = ("seg", "det", "cls")


def _run(plan: PhasePlan, reporter: RecordingReporter | None = None) -> RecordingReporter:
    reporter = reporter or RecordingReporter()
    run_plan(plan, EngineContext(targets=MULTITASK.targets, threads=1), reporter)
    return reporter


def _head(state: dict, task: str) -> dict[str, torch.Tensor]:
    prefix = f"heads.{task}."
    return {k: v for k, v in state["model"].items() if k.startswith(prefix)}


def _joint(**params) -> PhasePlan:
    base = {
        "warmup_epochs": 0,
        "joint_epochs": 1,
        "finetune_epochs": 0,
        "lr": 3e-3,
        "batch_size": 32,
    }
    return build_plan("joint", {**base, **params}, SCENE_CONTEXT)


@pytest.fixture(scope="module")
def per_task_run() -> tuple[PhasePlan, RecordingReporter]:
    plan = _joint(warmup_style="per_task", warmup_seg=1, warmup_det=1, warmup_cls=1)
    return plan, _run(plan)


def test_phases_train_exactly_their_active_tasks(per_task_run) -> None:
    plan, reporter = per_task_run
    assert [phase.tasks for phase in plan.phases] == [("seg",), ("det",), ("cls",), TASKS]
    seg_warmup, det_warmup, cls_warmup, joint = reporter.states
    # Each warmup phase moves its own head and leaves the other heads as they were.
    assert not _same(_head(det_warmup, "det"), _head(seg_warmup, "det"))
    assert _same(_head(det_warmup, "seg"), _head(seg_warmup, "seg"))
    assert _same(_head(det_warmup, "cls"), _head(seg_warmup, "cls"))
    assert not _same(_head(cls_warmup, "cls"), _head(det_warmup, "cls"))
    assert _same(_head(cls_warmup, "seg"), _head(det_warmup, "seg"))
    assert _same(_head(cls_warmup, "det"), _head(det_warmup, "det"))
    for task in TASKS:
        assert not _same(_head(joint, task), _head(cls_warmup, task)), task
    # Losses are reported for the tasks that trained; metrics for every task, every epoch.
    for report, phase in zip(reporter.reports, plan.phases, strict=True):
        assert {k.split("/")[-1] for k in report if k.startswith("train/loss/")} == set(phase.tasks)
        for task in TASKS:
            assert 0.0 <= report[TASK_METRICS[task]] <= 1.0
            assert f"forgetting/{task}" in report
    assert reporter.reports[-1]["val/acc"] == reporter.reports[-1]["val/cls_acc"]


def test_forgetting_is_the_drop_from_each_tasks_best(per_task_run) -> None:
    _, reporter = per_task_run
    for task in TASKS:
        metric = TASK_METRICS[task]
        history = [r[metric] for r in reporter.reports]
        first = {"seg": 0, "det": 1, "cls": 2}[task]
        # Before its first phase a task has learnt nothing it could forget.
        assert all(r[f"forgetting/{task}"] == 0.0 for r in reporter.reports[:first])
        best = max(history[first:])
        assert reporter.reports[-1][f"forgetting/{task}"] == pytest.approx(best - history[-1])
        assert reporter.reports[-1][f"best/{task}"] == pytest.approx(best)


def test_the_best_weights_of_every_task_are_kept(per_task_run) -> None:
    _, reporter = per_task_run
    final = reporter.states[-1]
    for task in TASKS:
        best = final["task_best"][task]
        epoch = best["epoch"]
        assert best["value"] == pytest.approx(reporter.reports[epoch - 1][TASK_METRICS[task]])
        assert _same(best["model"], reporter.states[epoch - 1]["model"]), task


def test_alternate_warmup_trains_every_head_one_task_per_step() -> None:
    plan = _joint(warmup_style="alternate", warmup_epochs=1, weighting="equal")
    assert plan.phases[0].task_sampling == "alternate"
    reporter = _run(plan)
    warmup = reporter.reports[0]
    for task in TASKS:
        # Trained alone, each task's loss has weight 1 on its steps.
        assert warmup[f"weight/{task}"] == 1.0
        assert warmup[f"train/loss/{task}"] > 0


def test_uncertainty_weighting_learns_its_weights_and_checkpoints_them() -> None:
    plan = _joint(joint_epochs=2, weighting="uncertainty", lr=3e-2)
    reporter = _run(plan)
    weights = [[r[f"weight/{task}"] for task in TASKS] for r in reporter.reports]
    assert weights[0] != pytest.approx([1.0, 1.0, 1.0])
    assert weights[1] != pytest.approx(weights[0])
    log_vars = reporter.states[-1]["weighting"]
    assert any(isinstance(value, torch.Tensor) for value in log_vars.values())


def test_head_lr_multipliers_set_each_heads_lr() -> None:
    plan = _joint(head_lr_seg=2.0, head_lr_cls=0.5, lr=1e-3)
    report = _run(plan).reports[0]
    assert report["lr/head/seg"] == pytest.approx(2e-3)
    assert report["lr/head/det"] == pytest.approx(1e-3)
    assert report["lr/head/cls"] == pytest.approx(5e-4)


def _seg_then_det(ewc: EWCSpec | None) -> PhasePlan:
    """Segmentation learnt first; detection then trains the backbone at a high lr.

    From a random backbone: a pretrained one depends on the thread count of the
    process that happened to pretrain it first, and this comparison should not.
    """
    context = dataclasses.replace(
        SCENE_CONTEXT, model=dataclasses.replace(TINY_MODEL, pretrained=None)
    )
    plan = build_plan(
        "sequential",
        {"order": "seg,det,cls", "task_epochs": 4, "lr": 1e-2, "batch_size": 32},
        context,
    )
    seg, det, _ = plan.phases
    det = dataclasses.replace(det, epochs=3, lr=5e-2, ewc=ewc)
    return dataclasses.replace(plan, phases=(seg, det))


def test_sequential_training_forgets_and_ewc_forgets_less() -> None:
    plain = _run(_seg_then_det(None)).reports
    with_ewc = _run(_seg_then_det(EWCSpec(strength=1e4, fisher_batches=5))).reports
    end_of_seg = plain[3]["val/loss/seg"]
    assert with_ewc[3]["val/loss/seg"] == end_of_seg  # the same first phase
    # Without EWC, training detection undoes much of segmentation (its validation
    # loss is the sensitive measure at this size; mIoU moves too) ...
    assert plain[-1]["val/loss/seg"] > 1.25 * end_of_seg
    assert plain[-1]["forgetting/seg"] > 0
    # ... and EWC holds the backbone near what segmentation needed: its seg loss rises by
    # less than half as much. A ratio of rises, because the end loss itself depends on the
    # CPU's kernels at this size (0.70 on one machine, against 0.61 at the end of seg).
    rise_with_ewc = with_ewc[-1]["val/loss/seg"] - end_of_seg
    assert rise_with_ewc < 0.5 * (plain[-1]["val/loss/seg"] - end_of_seg)
    assert with_ewc[-1]["train/ewc_penalty"] > 0
    assert "train/ewc_penalty" not in plain[-1]


def test_resuming_mid_plan_continues_with_the_same_ewc_anchors() -> None:
    plan = build_plan(
        "sequential",
        {
            "order": "cls,seg,det",
            "task_epochs": 1,
            "lr": 3e-3,
            "batch_size": 32,
            "use_ewc": True,
            "ewc_lambda": 100.0,
            "fisher_batches": 2,
        },
        SCENE_CONTEXT,
    )
    uninterrupted = _run(plan)
    crashed = RecordingReporter(crash_after=2)
    with pytest.raises(KeyboardInterrupt):
        _run(plan, crashed)
    assert len(crashed.states[-1]["ewc_anchors"]) == 1
    resumed = _run(plan, RecordingReporter(resume_from=crashed.states[-1]))
    assert [r["epoch"] for r in resumed.reports] == [3]
    assert _same(resumed.states[-1]["model"], uninterrupted.states[-1]["model"])
    assert [a["task"] for a in resumed.states[-1]["ewc_anchors"]] == ["cls", "seg"]


def test_train_locally_writes_the_best_weights_of_each_task(tmp_path) -> None:
    plan = _joint(joint_epochs=1)
    train_locally(plan, MULTITASK.targets, tmp_path, threads=1)
    final = torch.load(tmp_path / "model.pt", weights_only=True)
    for task in TASKS:
        best = torch.load(tmp_path / f"best_{task}.pt", weights_only=True)
        assert best.keys() == final.keys()
