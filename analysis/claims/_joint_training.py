"""The multi-task document's claims about how the joint phase trains: its task weights,
its losses, its convergence and its learning rate, and the weights it reports.

Most need the per-epoch table (weights, losses and curves are per epoch); the reported
weights are decided from the document alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from analysis.claims._catalogue import NOT_TESTED, REFUTED, SUPPORTED
from analysis.claims._common import (
    MEAN_TASK_METRIC,
    Experiment,
    Outcome,
    best_first,
    best_numbers,
    better_by,
    gap_detail,
    median_of,
    reported_tasks,
    task_mean,
)
from analysis.ranking import TrialRecord
from trainables.loss_ratio import loss_ratio_weights
from trainables.phases import Phase, PhasePlan

__all__ = [
    "BALANCED_RATIO",
    "IMPROVING_GAIN_POINTS",
    "JOINT_TRAINING_CHECKS",
    "REPORTED_ALPHA",
    "REPORTED_LOSSES",
    "REPORTED_WEIGHTS",
    "TAIL_SHARE",
    "WEIGHT_TOLERANCE",
]

#: Largest max/min ratio of task weights still called balanced. The document calls its
#: own [0.89, 1.23, 0.92] (ratio 1.38) balanced; 2 is our assumed bound.
BALANCED_RATIO = 2.0

#: A trial is still improving when its last epochs (the last 10%, at least 2) beat
#: everything before them by at least this many points.
IMPROVING_GAIN_POINTS = 0.5
TAIL_SHARE = 0.1

#: The document's final losses and the weights it reports for them.
REPORTED_LOSSES = {"seg": 1.1234, "det": 4.5678, "cls": 2.3012}
REPORTED_WEIGHTS = {"seg": 0.89, "det": 1.23, "cls": 0.92}
REPORTED_ALPHA = 0.5
#: Weights within this of the reported ones would count as reproduced (two decimals shown).
WEIGHT_TOLERANCE = 0.05


def _joint_phase(record: TrialRecord) -> tuple[int, Phase] | None:
    """The plan's ``joint`` phase with its 1-based index (as epochs report ``phase``)."""
    phases = record.phase_plan.phases if record.phase_plan is not None else ()
    for index, phase in enumerate(phases, start=1):
        if phase.name == "joint":
            return index, phase
    return None


def _joint_method(record: TrialRecord) -> str | None:
    found = _joint_phase(record)
    return found[1].weighting.method if found else None


def _fixed_lr(plan: PhasePlan) -> float | None:
    """The plan's one learning rate when every phase keeps it constant, else None."""
    rates = {float(phase.lr) for phase in plan.phases}
    constant = all(phase.lr_schedule.kind == "constant" for phase in plan.phases)
    return rates.pop() if constant and len(rates) == 1 else None


def _joint_trials_by_method(exp: Experiment, method: str) -> list[TrialRecord]:
    trials, _ = exp.trials("joint")
    return [r for r in trials if _joint_method(r) == method]


def _check_loss_ratio_balanced(exp: Experiment) -> Outcome:
    """Supported when the median (over loss-ratio trials) of the largest max/min weight
    ratio in the joint phase is <= 2."""
    if exp.curves is None:
        return NOT_TESTED, "needs the per-epoch table (epochs)", {}
    _, missing = exp.trials("joint")
    if missing:
        return NOT_TESTED, missing, {}
    trials = _joint_trials_by_method(exp, "loss_ratio")
    if not trials:
        return (
            NOT_TESTED,
            "no joint trial that ran its plan weights its joint phase by loss ratio",
            {},
        )
    ratios = []
    for record in trials:
        found = _joint_phase(record)
        index, tasks = (found[0], found[1].tasks) if found else (0, ())
        per_epoch = []
        for row in exp.curves.get(record.trial_id, []):
            weights = [row.get(f"weight/{task}") for task in tasks]
            weights = [float(w) for w in weights if isinstance(w, (int, float)) and w > 0]
            if row.get("phase") == index and len(weights) > 1:
                per_epoch.append(max(weights) / min(weights))
        if per_epoch:
            ratios.append(max(per_epoch))
    if not ratios:
        return NOT_TESTED, "no loss-ratio joint trial reports weight/<task> in its joint phase", {}
    document = max(REPORTED_WEIGHTS.values()) / min(REPORTED_WEIGHTS.values())
    numbers = {
        "median_max_ratio": round(median_of(ratios), 3),
        "max_ratio": round(max(ratios), 3),
        "document_ratio": round(document, 3),
        "trials": float(len(ratios)),
    }
    verdict = SUPPORTED if numbers["median_max_ratio"] <= BALANCED_RATIO else REFUTED
    detail = (
        f"Largest max/min task-weight ratio in the joint phase: median"
        f" {numbers['median_max_ratio']:.2f} over {len(ratios)} loss-ratio trials (largest"
        f" {numbers['max_ratio']:.2f}; the document's own weights {document:.2f}), against an"
        f" assumed bound of {BALANCED_RATIO:g}. Median decides; {exp.ran('joint')}."
    )
    return verdict, detail, numbers


def _check_dynamic_weighting_helps(exp: Experiment) -> Outcome:
    """Supported when the best loss-ratio joint trial beats the best equal-weighted one
    by >= 1 point of mean task metric."""
    _, missing = exp.trials("joint")
    if missing:
        return NOT_TESTED, missing, {}
    groups = {
        m: best_first(_joint_trials_by_method(exp, m), MEAN_TASK_METRIC)
        for m in ("loss_ratio", "equal")
    }
    for method, scored in groups.items():
        if not scored:
            return NOT_TESTED, f"no joint trial that ran its plan uses {method} weighting", {}
    labels = ("loss_ratio", "equal")
    numbers = best_numbers(groups["loss_ratio"], groups["equal"], labels)
    verdict, reason = better_by(numbers["best_gap_pts"], "equal weighting")
    detail = (
        f"Final mean task metric, {gap_detail(numbers, labels, labels)}: {reason}."
        f" Best trials decide; other parameters differ between these trials"
        f" ({exp.ran('joint')})."
    )
    return verdict, detail, numbers


def _check_task_losses_decrease(exp: Experiment) -> Outcome:
    """Supported when, in at least half of the joint trials, every task's last
    train/loss/<task> is below its first."""
    if exp.curves is None:
        return NOT_TESTED, "needs the per-epoch table (epochs)", {}
    trials, missing = exp.trials("joint")
    if missing:
        return NOT_TESTED, missing, {}
    outcomes = []
    for record in trials:
        rows = exp.curves.get(record.trial_id, [])
        fell = []
        for task in reported_tasks(record):
            losses = [row.get(f"train/loss/{task}") for row in rows]
            losses = [v for v in losses if isinstance(v, (int, float)) and math.isfinite(v)]
            if len(losses) > 1:
                fell.append(losses[-1] < losses[0])
        if fell:
            outcomes.append(all(fell))
    if not outcomes:
        return NOT_TESTED, "no joint trial reports two epochs of train/loss/<task>", {}
    share = sum(outcomes) / len(outcomes)
    numbers = {"trials": float(len(outcomes)), "all_decreased": float(sum(outcomes))}
    verdict = SUPPORTED if share >= 0.5 else REFUTED
    detail = (
        f"Every task's train/loss ended below its first value in {sum(outcomes)} of"
        f" {len(outcomes)} joint trials (at least half needed); {exp.ran('joint')}."
    )
    return verdict, detail, numbers


def _improvement(values: Sequence[float]) -> float | None:
    """How far the last epochs (the last 10%, at least 2) beat every epoch before them."""
    tail = max(2, math.ceil(TAIL_SHARE * len(values)))
    if len(values) <= tail:
        return None
    return max(values[-tail:]) - max(values[:-tail])


def _check_more_epochs_needed(exp: Experiment) -> Outcome:
    """Supported when at least half of the joint trials end still improving: their last
    epochs beat all earlier ones by >= 0.5 point of mean task metric."""
    if exp.curves is None:
        return NOT_TESTED, "needs the per-epoch table (epochs)", {}
    trials, missing = exp.trials("joint")
    if missing:
        return NOT_TESTED, missing, {}
    gains, lengths = [], []
    for record in trials:
        values = [task_mean(row) for row in exp.curves.get(record.trial_id, [])]
        gain = _improvement([v for v in values if v is not None])
        if gain is not None:
            gains.append(100.0 * gain)
            lengths.append(record.epochs)
    if not gains:
        return NOT_TESTED, "no joint trial has enough epochs of task metrics to judge", {}
    improving = sum(gain >= IMPROVING_GAIN_POINTS for gain in gains)
    numbers = {
        "trials": float(len(gains)),
        "still_improving": float(improving),
        "median_gain_pts": round(median_of(gains), 2),
        "min_epochs": float(min(lengths)),
        "max_epochs": float(max(lengths)),
    }
    verdict = SUPPORTED if improving >= len(gains) / 2 else REFUTED
    detail = (
        f"{improving} of {len(gains)} joint trials ({min(lengths)}-{max(lengths)} epochs)"
        f" end still improving: their last epochs beat all earlier ones by a"
        f" median {numbers['median_gain_pts']:+.1f} points of mean task metric (>="
        f" {IMPROVING_GAIN_POINTS:g} counts). At least half needed; {exp.ran('joint')}."
    )
    return verdict, detail, numbers


def _check_fixed_lr_limits(exp: Experiment) -> Outcome:
    """Supported when the best decaying-lr joint trial beats the best fixed-lr one by
    >= 1 point of mean task metric (fixed: one lr, constant, in every phase)."""
    trials, missing = exp.trials("joint")
    if missing:
        return NOT_TESTED, missing, {}
    planned = [r for r in trials if r.phase_plan is not None]
    fixed_lr = {r.trial_id: _fixed_lr(r.phase_plan) for r in planned}
    fixed = best_first([r for r in planned if fixed_lr[r.trial_id] is not None], MEAN_TASK_METRIC)
    decayed = best_first([r for r in planned if fixed_lr[r.trial_id] is None], MEAN_TASK_METRIC)
    if not fixed or not decayed:
        kind = "fixed" if not fixed else "decaying"
        return NOT_TESTED, f"no joint trial that ran its plan uses a {kind} learning rate", {}
    labels = ("decayed", "fixed")
    numbers = best_numbers(decayed, fixed, labels)
    numbers["fixed_best_lr"] = float(fixed_lr[fixed[0][1].trial_id])
    verdict, reason = better_by(numbers["best_gap_pts"], "fixed lr")
    detail = (
        f"Final mean task metric, {gap_detail(numbers, labels, labels)}; the best fixed-lr"
        f" trial uses lr {numbers['fixed_best_lr']:g}: {reason}. Best trials decide; other"
        f" parameters differ between these trials ({exp.ran('joint')})."
    )
    return verdict, detail, numbers


def _check_reported_weights(_: Experiment) -> Outcome:
    """Decided from the document alone: refuted when the formula's weights for the
    reported losses differ from the reported weights by more than 0.05."""
    tasks = tuple(REPORTED_LOSSES)
    computed = loss_ratio_weights([REPORTED_LOSSES[t] for t in tasks], REPORTED_ALPHA)
    numbers = {}
    for task, weight in zip(tasks, computed, strict=True):
        numbers[f"computed/{task}"] = round(weight, 4)
        numbers[f"reported/{task}"] = REPORTED_WEIGHTS[task]
    error = max(abs(w - REPORTED_WEIGHTS[t]) for t, w in zip(tasks, computed, strict=True))
    numbers["max_abs_error"] = round(error, 4)
    verdict = SUPPORTED if error <= WEIGHT_TOLERANCE else REFUTED
    shown = ", ".join(f"{w:.2f}" for w in computed)
    reported = ", ".join(f"{REPORTED_WEIGHTS[t]:.2f}" for t in tasks)
    detail = (
        f"With losses seg/det/cls = 1.1234/4.5678/2.3012 the formula gives [{shown}], not"
        f" the reported [{reported}] (largest difference {error:.2f}): it weights the largest"
        f" loss (det) least, where the document says det is overweighted."
    )
    return verdict, detail, numbers


#: The check of each joint-training claim, by claim id.
JOINT_TRAINING_CHECKS: dict[str, Callable[[Experiment], Outcome]] = {
    "loss_ratio_balanced": _check_loss_ratio_balanced,
    "dynamic_weighting_helps": _check_dynamic_weighting_helps,
    "task_losses_decrease": _check_task_losses_decrease,
    "more_epochs_needed": _check_more_epochs_needed,
    "fixed_lr_limits": _check_fixed_lr_limits,
    "reported_weights": _check_reported_weights,
}
