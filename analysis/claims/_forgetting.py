"""The multi-task document's claims about forgetting: sequential training forgets its
earlier tasks, joint training keeps them, EWC does not help, and joint ends better.

Forgetting is read from the final ``forgetting/<task>`` and ``best/<task>`` metrics,
relative to the task's best, so tasks on different scales can be pooled.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

from analysis.claims._catalogue import NOT_TESTED, REFUTED, SUPPORTED
from analysis.claims._common import (
    MEAN_TASK_METRIC,
    Experiment,
    Outcome,
    better_by,
    compare_best,
    final_metric,
    gap_detail,
    median_of,
    percent,
    reported_tasks,
)
from analysis.ranking import TrialRecord

__all__ = [
    "CATASTROPHIC_DROP",
    "EWC_EFFECT_POINTS",
    "FORGETTING_CHECKS",
    "KEPT_DROP",
]

#: Relative drop from a task's best above which forgetting is catastrophic (the document's
#: ">90% drop"), and below which a task counts as kept.
CATASTROPHIC_DROP = 0.90
KEPT_DROP = 0.10

#: Reduction of the median relative forgetting (points) that would make EWC effective.
EWC_EFFECT_POINTS = 10.0


def _uses_ewc(record: TrialRecord) -> bool:
    if record.phase_plan is not None:
        return any(phase.ewc is not None for phase in record.phase_plan.phases)
    return bool(record.params.get("use_ewc"))


def _earlier_tasks(record: TrialRecord) -> list[str]:
    """Tasks trained before the plan's last phase and not in it."""
    phases = record.phase_plan.phases if record.phase_plan is not None else ()
    if not phases:
        return []
    last = set(phases[-1].tasks)
    ordered = dict.fromkeys(t for phase in phases[:-1] for t in phase.tasks)
    return [task for task in ordered if task not in last]


def _relative_drops(record: TrialRecord, tasks: Sequence[str]) -> dict[str, float]:
    """``forgetting/<task> / best/<task>`` at the end, per task with a positive best."""
    drops = {}
    for task in tasks:
        forgetting, best = (
            final_metric(record, f"forgetting/{task}"),
            final_metric(record, f"best/{task}"),
        )
        if forgetting is not None and best is not None and best > 0:
            drops[task] = max(forgetting, 0.0) / best
    return drops


def _sequential_drops(
    trials: Sequence[TrialRecord],
) -> list[tuple[float, dict[str, float]]]:
    """Per sequential trial: the mean relative drop of its earlier tasks, and each one's."""
    out = []
    for record in trials:
        drops = _relative_drops(record, _earlier_tasks(record))
        if drops:
            out.append((sum(drops.values()) / len(drops), drops))
    return out


def _check_sequential_forgetting(exp: Experiment) -> Outcome:
    """Supported when the median (over trials) of the mean relative drop of the tasks
    trained before the last phase exceeds 90%."""
    trials, missing = exp.trials("sequential")
    drops = _sequential_drops(trials)
    if missing or not drops:
        return NOT_TESTED, missing or "no sequential trial reports forgetting/ and best/", {}
    means = [mean for mean, _ in drops]
    numbers = {
        "median_drop_pct": percent(median_of(means)),
        "min_drop_pct": percent(min(means)),
        "max_drop_pct": percent(max(means)),
        "trials": float(len(drops)),
    }
    per_task: dict[str, list[float]] = defaultdict(list)
    for _, by_task in drops:
        for task, drop in by_task.items():
            per_task[task].append(drop)
    for task, values in sorted(per_task.items()):
        numbers[f"median_drop_pct/{task}"] = percent(median_of(values))
    median = numbers["median_drop_pct"]
    verdict = SUPPORTED if median > 100 * CATASTROPHIC_DROP else REFUTED
    tasks = ", ".join(f"{t} {numbers[f'median_drop_pct/{t}']:.1f}%" for t in sorted(per_task))
    detail = (
        f"Earlier tasks end a median {median:.1f}% below their best"
        f" (forgetting/<task> / best/<task>; trials {numbers['min_drop_pct']:.1f}-"
        f"{numbers['max_drop_pct']:.1f}%; {tasks}), against the claimed >90%."
        f" Median over {len(drops)} trials decides; {exp.ran('sequential')}."
    )
    return verdict, detail, numbers


def _check_joint_no_forgetting(exp: Experiment) -> Outcome:
    """Supported when the median (over trials) of the worst task's relative drop is < 10%."""
    trials, missing = exp.trials("joint")
    worst = [
        (max(drops.values()), record)
        for record in trials
        if (drops := _relative_drops(record, reported_tasks(record)))
    ]
    if missing or not worst:
        return NOT_TESTED, missing or "no joint trial reports forgetting/ and best/", {}
    values = [w for w, _ in worst]
    numbers = {
        "median_worst_drop_pct": percent(median_of(values)),
        "max_worst_drop_pct": percent(max(values)),
        "trials": float(len(worst)),
    }
    median = numbers["median_worst_drop_pct"]
    verdict = SUPPORTED if median < 100 * KEPT_DROP else REFUTED
    detail = (
        f"Joint trials end a median {median:.1f}% below their best on their worst task"
        f" (largest {numbers['max_worst_drop_pct']:.1f}%), against < {100 * KEPT_DROP:g}% for"
        f" kept. Median decides; {exp.ran('joint')}."
    )
    return verdict, detail, numbers


def _check_ewc_ineffective(exp: Experiment) -> Outcome:
    """Supported when EWC lowers the median relative forgetting of earlier tasks by less
    than 10 points."""
    trials, missing = exp.trials("sequential")
    if missing:
        return NOT_TESTED, missing, {}
    groups = {
        "ewc": _sequential_drops([r for r in trials if _uses_ewc(r)]),
        "no_ewc": _sequential_drops([r for r in trials if not _uses_ewc(r)]),
    }
    for name, label in (("ewc", "with"), ("no_ewc", "without")):
        if not groups[name]:
            return NOT_TESTED, f"no sequential trial {label} EWC reports forgetting", {}
    numbers = {
        f"{name}_median_drop_pct": percent(median_of([mean for mean, _ in drops]))
        for name, drops in groups.items()
    }
    numbers["ewc_trials"] = float(len(groups["ewc"]))
    numbers["no_ewc_trials"] = float(len(groups["no_ewc"]))
    reduction = round(numbers["no_ewc_median_drop_pct"] - numbers["ewc_median_drop_pct"], 2)
    numbers["reduction_pts"] = reduction
    verdict = SUPPORTED if reduction < EWC_EFFECT_POINTS else REFUTED
    detail = (
        f"Earlier tasks' median relative drop: {numbers['ewc_median_drop_pct']:.1f}% with EWC"
        f" vs {numbers['no_ewc_median_drop_pct']:.1f}% without ({-reduction:+.1f} points with"
        f" EWC; effective would need a reduction of >= {EWC_EFFECT_POINTS:g})."
        f" Medians decide; {exp.ran('sequential')}."
    )
    return verdict, detail, numbers


def _check_joint_beats_sequential(exp: Experiment) -> Outcome:
    """Supported when joint's best mean task metric beats sequential's by >= 1 point."""
    labels = ("joint", "sequential")
    numbers, context = compare_best(exp, *labels, MEAN_TASK_METRIC)
    if numbers is None:
        return NOT_TESTED, context, {}
    verdict, reason = better_by(numbers["best_gap_pts"], "sequential")
    detail = (
        f"Final mean task metric, {gap_detail(numbers, labels, labels)}: {reason}."
        f" Best trials decide; {context}."
    )
    return verdict, detail, numbers


#: The check of each forgetting claim, by claim id.
FORGETTING_CHECKS: dict[str, Callable[[Experiment], Outcome]] = {
    "sequential_forgetting": _check_sequential_forgetting,
    "joint_no_forgetting": _check_joint_no_forgetting,
    "ewc_ineffective": _check_ewc_ineffective,
    "joint_beats_sequential": _check_joint_beats_sequential,
}
