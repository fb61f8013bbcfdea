"""The source documents' claims, each decided on an experiment with the numbers behind it.

Every claim quotes the sentence it comes from. Its verdict is ``supported``, ``refuted``
or ``not tested`` (the experiment lacks the strategies or metrics it needs; the detail
says which). Only trials that ran their plan (``done`` or ``early_stopped``) are
compared: a trial a scheduler stopped was judged on a fraction of its plan.

Decision rules (accuracies and task metrics in percent, differences in points):

- A claim that one strategy ends *better* compares the best trial of each (by the final
  metric) and reports the medians beside them; the best trials decide. A named gap
  ("2-5% better") is supported when the measured gap reaches the claim's lower bound;
  a gap that names no size must reach :data:`MIN_GAP_POINTS`.
- A claim about how a strategy *behaves* (overfits, is stable, forgets) is decided by
  the median over its trials, since one lucky trial says little about a behaviour.
- An accuracy range ("85-95%") is supported when the best trial ends inside it.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from analysis.ranking import RAN_PLAN, TrialRecord
from trainables.loss_ratio import loss_ratio_weights
from trainables.metric_names import TASK_METRICS as TASK_METRIC_NAMES

__all__ = [
    "CLAIMS",
    "NOT_TESTED",
    "REFUTED",
    "SUPPORTED",
    "Claim",
    "ClaimVerdict",
    "check_claims",
    "claims_table",
]

SUPPORTED, REFUTED, NOT_TESTED = "supported", "refuted", "not tested"


#: The strategies the documents' claims are about; any other is an experiment's own.
DOCUMENTED_STRATEGIES = frozenset({"progressive", "single_phase", "joint", "sequential"})

#: Smallest difference that counts as "better" where a claim names no size: below it,
#: trials of one search differ by sampling noise as much as by strategy.
MIN_GAP_POINTS = 1.0

#: Gap (points) by which progressive training is claimed to beat single-phase training.
CLAIMED_GAP = (2.0, 5.0)

#: Relative drop from a task's best above which forgetting is catastrophic (the document's
#: ">90% drop"), and below which a task counts as kept.
CATASTROPHIC_DROP = 0.90
KEPT_DROP = 0.10

#: Reduction of the median relative forgetting (points) that would make EWC effective.
EWC_EFFECT_POINTS = 10.0

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

#: The validation metric that stands for each task (as the engine reports it).
TASK_METRICS = tuple(TASK_METRIC_NAMES.values())

_TRANSFER_RANGE = "| **Final Accuracy** | Higher (85-95%) | Lower (80-90%) |"
_FORGETTING_ROW = "| Catastrophic Forgetting | Severe (>90% drop) | None |"


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of a source document.

    Attributes:
        id: Short stable name.
        document: ``transfer`` or ``multitask``.
        statement: The claim as we test it.
        source: The document's sentence, quoted verbatim.
    """

    id: str
    document: str
    statement: str
    source: str


@dataclasses.dataclass(frozen=True)
class ClaimVerdict:
    """A claim's verdict on one experiment.

    Attributes:
        claim: The claim.
        verdict: ``supported``, ``refuted`` or ``not tested``.
        detail: One or two sentences with the numbers (or why it was not tested).
        numbers: The numbers behind the verdict (percent for metrics, points for gaps).
    """

    claim: Claim
    verdict: str
    detail: str
    numbers: dict[str, float]


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "progressive_gain",
        "transfer",
        "Progressive training ends 2-5 points more accurate than single-phase training.",
        "**Higher final accuracy** (typically 2-5% improvement)",
    ),
    Claim(
        "progressive_accuracy",
        "transfer",
        "Progressive training reaches 85-95% final accuracy.",
        _TRANSFER_RANGE,
    ),
    Claim(
        "single_phase_accuracy",
        "transfer",
        "Single-phase training reaches 80-90% final accuracy.",
        _TRANSFER_RANGE,
    ),
    Claim(
        "progressive_overfits_less",
        "transfer",
        "Progressive training ends with a smaller train-over-val accuracy gap.",
        "**Reduced overfitting** on small datasets",
    ),
    Claim(
        "progressive_more_stable",
        "transfer",
        "Progressive training's val/acc falls less from one epoch to the next.",
        "| **Training Stability** | Very Stable | Moderate |",
    ),
    Claim(
        "sequential_forgetting",
        "multitask",
        "Sequential training ends more than 90% below each earlier task's best metric.",
        _FORGETTING_ROW,
    ),
    Claim(
        "joint_no_forgetting",
        "multitask",
        "Joint training ends within 10% of every task's best metric.",
        "**No Catastrophic Forgetting**: Joint training prevented complete task failure",
    ),
    Claim(
        "ewc_ineffective",
        "multitask",
        "EWC does not reduce sequential training's forgetting.",
        "EWC was removed after proving ineffective",
    ),
    Claim(
        "joint_beats_sequential",
        "multitask",
        "Joint training ends with better task metrics than sequential training.",
        "| Final Performance | Failed completely | Partial success |",
    ),
    Claim(
        "loss_ratio_balanced",
        "multitask",
        "Loss-ratio task weights stay balanced (max/min <= 2) through the joint phase.",
        "**Stable Weights**: Task weights remained relatively balanced",
    ),
    Claim(
        "dynamic_weighting_helps",
        "multitask",
        "Loss-ratio weighting ends with better task metrics than equal weighting.",
        "**Dynamic Weighting Helps**: But needs better tuning",
    ),
    Claim(
        "task_losses_decrease",
        "multitask",
        "Every task's training loss ends lower than it started under joint training.",
        "**Loss Convergence**: All task losses decreased during training",
    ),
    Claim(
        "more_epochs_needed",
        "multitask",
        "Joint training is still improving when its plan ends.",
        "**More Training Needed**: 50 epochs insufficient for convergence",
    ),
    Claim(
        "fixed_lr_limits",
        "multitask",
        "A fixed learning rate ends with worse task metrics than a decaying one.",
        "**Learning Rate Critical**: Fixed rate limits performance",
    ),
    Claim(
        "reported_weights",
        "multitask",
        "The reported weights follow from w_i = (mean_j L_j / L_i)^0.5 and the final losses.",
        "- Task Weights: [0.89, 1.23, 0.92]",
    ),
)


_Outcome = tuple[str, str, dict[str, float]]


@dataclasses.dataclass(frozen=True)
class _Score:
    """A per-trial number to compare strategies by (higher is better)."""

    name: str
    of: Callable[[TrialRecord], float | None]


@dataclasses.dataclass(frozen=True)
class _Experiment:
    """The records, and the per-epoch rows of trials that ran their plan (None: no table)."""

    records: tuple[TrialRecord, ...]
    curves: Mapping[str, list[dict[str, Any]]] | None

    def trials(self, strategy: str) -> tuple[list[TrialRecord], str | None]:
        """Trials of ``strategy`` that ran their plan, or why there are none."""
        every = [r for r in self.records if r.strategy == strategy]
        if not every:
            return [], f"no {strategy} trial in this experiment"
        ran = [r for r in every if r.status in RAN_PLAN]
        if not ran:
            return [], f"no {strategy} trial ran its plan ({len(every)} stopped or failed)"
        return ran, None

    def ran(self, strategy: str) -> str:
        every = [r for r in self.records if r.strategy == strategy]
        ran = sum(r.status in RAN_PLAN for r in every)
        return f"{ran} of {len(every)} {strategy} trials ran their plan"


def _final(record: TrialRecord, name: str) -> float | None:
    value = record.metrics.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _task_mean(values: Mapping[str, Any]) -> float | None:
    present = [
        float(values[m])
        for m in TASK_METRICS
        if isinstance(values.get(m), (int, float)) and math.isfinite(values[m])
    ]
    return sum(present) / len(present) if present else None


_ACC = _Score("val/acc", lambda r: _final(r, "val/acc"))
_TASKS = _Score("mean of val/cls_acc, val/seg_miou, val/det_map50", lambda r: _task_mean(r.metrics))


def _pct(value: float) -> float:
    return round(100.0 * value, 2)


def _scored(records: Sequence[TrialRecord], score: _Score) -> list[tuple[float, TrialRecord]]:
    """Trials with a score, best first (ties to the trial id)."""
    pairs = [(value, r) for r in records if (value := score.of(r)) is not None]
    return sorted(pairs, key=lambda pair: (-pair[0], pair[1].trial_id))


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _joint_phase(record: TrialRecord) -> tuple[int, Mapping[str, Any]] | None:
    """The plan's ``joint`` phase with its 1-based index (as epochs report ``phase``)."""
    for index, phase in enumerate((record.plan or {}).get("phases", ()), start=1):
        if phase.get("name") == "joint":
            return index, phase
    return None


def _joint_method(record: TrialRecord) -> str | None:
    found = _joint_phase(record)
    return ((found[1].get("weighting") or {}).get("method", "equal")) if found else None


def _uses_ewc(record: TrialRecord) -> bool:
    if record.plan:
        return any(phase.get("ewc") for phase in record.plan.get("phases", ()))
    return bool(record.params.get("use_ewc"))


def _fixed_lr(plan: Mapping[str, Any]) -> float | None:
    """The plan's one learning rate when every phase keeps it constant, else None."""
    phases = plan.get("phases", ())
    rates = {float(phase["lr"]) for phase in phases}
    constant = all(
        (phase.get("lr_schedule") or {}).get("kind", "constant") == "constant" for phase in phases
    )
    return rates.pop() if constant and len(rates) == 1 else None


def _earlier_tasks(record: TrialRecord) -> list[str]:
    """Tasks trained before the plan's last phase and not in it."""
    phases = (record.plan or {}).get("phases", ())
    if not phases:
        return []
    last = set(phases[-1].get("tasks", ()))
    ordered = dict.fromkeys(t for phase in phases[:-1] for t in phase.get("tasks", ()))
    return [task for task in ordered if task not in last]


def _relative_drops(record: TrialRecord, tasks: Sequence[str]) -> dict[str, float]:
    """``forgetting/<task> / best/<task>`` at the end, per task with a positive best."""
    drops = {}
    for task in tasks:
        forgetting, best = _final(record, f"forgetting/{task}"), _final(record, f"best/{task}")
        if forgetting is not None and best is not None and best > 0:
            drops[task] = max(forgetting, 0.0) / best
    return drops


def _reported_tasks(record: TrialRecord) -> list[str]:
    return sorted(
        name.split("/", 1)[1] for name in record.metrics if name.startswith("forgetting/")
    )


def _compare_best(
    exp: _Experiment, first: str, second: str, score: _Score
) -> tuple[dict[str, float] | None, str]:
    """Best and median ``score`` of two strategies' trials with who ran, or why not tested.

    The numbers are in percent, the gaps (``first`` minus ``second``) in points.
    """
    groups = []
    for strategy in (first, second):
        trials, missing = exp.trials(strategy)
        if missing:
            return None, missing
        scored = _scored(trials, score)
        if not scored:
            return None, f"no {strategy} trial that ran its plan reports {score.name}"
        groups.append(scored)
    numbers = _best_numbers(groups[0], groups[1], (first, second))
    return numbers, f"{exp.ran(first)}, {exp.ran(second)}"


def _best_numbers(
    first: list[tuple[float, TrialRecord]],
    second: list[tuple[float, TrialRecord]],
    labels: tuple[str, str],
) -> dict[str, float]:
    a, b = labels
    numbers = {
        f"{a}_best_pct": _pct(first[0][0]),
        f"{b}_best_pct": _pct(second[0][0]),
        f"{a}_median_pct": _pct(_median([v for v, _ in first])),
        f"{b}_median_pct": _pct(_median([v for v, _ in second])),
        f"{a}_trials": float(len(first)),
        f"{b}_trials": float(len(second)),
    }
    numbers["best_gap_pts"] = round(numbers[f"{a}_best_pct"] - numbers[f"{b}_best_pct"], 2)
    numbers["median_gap_pts"] = round(numbers[f"{a}_median_pct"] - numbers[f"{b}_median_pct"], 2)
    return numbers


def _better_by(
    gap: float, other: str, claimed: tuple[float, float] | None = None
) -> tuple[str, str]:
    """Verdict and reason for a best-trial gap (points) against what the claim needs.

    A claim naming a range of gaps needs its lower bound (a gap above the range still
    supports it); one naming none needs :data:`MIN_GAP_POINTS`.
    """
    if gap <= 0:
        return REFUTED, f"{other} is as good or better"
    needed = claimed[0] if claimed else MIN_GAP_POINTS
    verdict = SUPPORTED if gap >= needed else REFUTED
    if claimed:
        where = "above" if gap > claimed[1] else "within" if gap >= needed else "below"
        return verdict, f"the gap is {where} the claimed {claimed[0]:g}-{claimed[1]:g} points"
    where = "at least" if gap >= needed else "below"
    return verdict, f"the gap is {where} the {needed:g} point needed"


def _gap_detail(numbers: dict[str, float], labels: tuple[str, str], names: tuple[str, str]) -> str:
    a, b = labels
    return (
        f"best trials {names[0]} {numbers[f'{a}_best_pct']:.1f}% vs {names[1]}"
        f" {numbers[f'{b}_best_pct']:.1f}% ({numbers['best_gap_pts']:+.1f} points; medians"
        f" {numbers[f'{a}_median_pct']:.1f}% vs {numbers[f'{b}_median_pct']:.1f}%,"
        f" {numbers['median_gap_pts']:+.1f})"
    )


def _check_progressive_gain(exp: _Experiment) -> _Outcome:
    """Supported when progressive's best final val/acc beats single-phase's by >= 2 points."""
    labels = ("progressive", "single_phase")
    numbers, context = _compare_best(exp, *labels, _ACC)
    if numbers is None:
        return NOT_TESTED, context, {}
    gap = numbers["best_gap_pts"]
    verdict, reason = _better_by(gap, "single-phase", CLAIMED_GAP)
    detail = (
        f"Final val/acc, {_gap_detail(numbers, labels, ('progressive', 'single-phase'))}:"
        f" {reason}. Best trials decide; {context}."
    )
    return verdict, detail, numbers


def _accuracy_range(exp: _Experiment, strategy: str, low: float, high: float) -> _Outcome:
    """Supported when the strategy's best final val/acc lies in [low, high] percent."""
    trials, missing = exp.trials(strategy)
    scored = _scored(trials, _ACC)
    if missing or not scored:
        return NOT_TESTED, missing or f"no {strategy} trial reports val/acc", {}
    best = _pct(scored[0][0])
    median = _pct(_median([v for v, _ in scored]))
    numbers = {"best_pct": best, "median_pct": median, "low_pct": low, "high_pct": high}
    if low <= best <= high:
        verdict, where = SUPPORTED, "inside"
    else:
        verdict, where = REFUTED, "below" if best < low else "above"
    detail = (
        f"Best {strategy} trial ends at {best:.1f}% val/acc, {where} the claimed"
        f" {low:g}-{high:g}% (median {median:.1f}%). Best trial decides; {exp.ran(strategy)}."
    )
    return verdict, detail, numbers


def _check_progressive_accuracy(exp: _Experiment) -> _Outcome:
    return _accuracy_range(exp, "progressive", 85.0, 95.0)


def _check_single_phase_accuracy(exp: _Experiment) -> _Outcome:
    return _accuracy_range(exp, "single_phase", 80.0, 90.0)


def _train_val_gaps(trials: Sequence[TrialRecord]) -> list[tuple[float, TrialRecord]]:
    gaps = []
    for record in trials:
        train, val = _final(record, "train/acc"), _final(record, "val/acc")
        if train is not None and val is not None:
            gaps.append((train - val, record))
    return gaps


def _check_overfits_less(exp: _Experiment) -> _Outcome:
    """Overfitting is how far final train/acc exceeds val/acc (0 when val/acc is higher).

    Supported when progressive's median is lower than single-phase's by >= 1 point.
    """
    gaps = {}
    for strategy in ("progressive", "single_phase"):
        trials, missing = exp.trials(strategy)
        gaps[strategy] = _train_val_gaps(trials)
        if missing or not gaps[strategy]:
            return NOT_TESTED, missing or f"no {strategy} trial reports train/acc", {}
    numbers = {}
    for strategy, pairs in gaps.items():
        numbers[f"{strategy}_median_overfit_pts"] = _pct(_median([max(g, 0.0) for g, _ in pairs]))
        numbers[f"{strategy}_median_gap_pts"] = _pct(_median([g for g, _ in pairs]))
        best = max(pairs, key=lambda pair: (_final(pair[1], "val/acc"), pair[1].trial_id))
        numbers[f"{strategy}_best_trial_gap_pts"] = _pct(best[0])
    p, s = numbers["progressive_median_overfit_pts"], numbers["single_phase_median_overfit_pts"]
    verdict = SUPPORTED if s - p >= MIN_GAP_POINTS else REFUTED
    detail = (
        f"Median overfitting (train/acc minus val/acc at the end, 0 when val/acc is higher):"
        f" progressive {p:.1f} vs single-phase {s:.1f} points (raw median gaps"
        f" {numbers['progressive_median_gap_pts']:+.1f} vs"
        f" {numbers['single_phase_median_gap_pts']:+.1f}; best trials'"
        f" {numbers['progressive_best_trial_gap_pts']:+.1f} vs"
        f" {numbers['single_phase_best_trial_gap_pts']:+.1f}). Medians decide, progressive must"
        f" be >= {MIN_GAP_POINTS:g} point lower; {exp.ran('progressive')},"
        f" {exp.ran('single_phase')}."
    )
    return verdict, detail, numbers


def _largest_drop(rows: Sequence[Mapping[str, Any]], name: str) -> float | None:
    """Largest fall of ``name`` from one epoch to the next (0 if it never falls)."""
    values = [float(row[name]) for row in rows if isinstance(row.get(name), (int, float))]
    if len(values) < 2:
        return None
    return max(0.0, *(before - after for before, after in itertools.pairwise(values)))


def _check_more_stable(exp: _Experiment) -> _Outcome:
    """Instability is a trial's largest epoch-to-epoch fall of val/acc.

    Supported when progressive's median is lower than single-phase's by >= 1 point.
    """
    if exp.curves is None:
        return NOT_TESTED, "needs the per-epoch table (epochs)", {}
    numbers = {}
    for strategy in ("progressive", "single_phase"):
        trials, missing = exp.trials(strategy)
        drops = [
            (drop, record)
            for record in trials
            if (drop := _largest_drop(exp.curves.get(record.trial_id, []), "val/acc")) is not None
        ]
        if missing or not drops:
            return NOT_TESTED, missing or f"no {strategy} trial has two epochs of val/acc", {}
        best = max(drops, key=lambda pair: (_final(pair[1], "val/acc") or 0.0, pair[1].trial_id))
        numbers[f"{strategy}_median_drop_pts"] = _pct(_median([d for d, _ in drops]))
        numbers[f"{strategy}_best_trial_drop_pts"] = _pct(best[0])
        numbers[f"{strategy}_median_epochs"] = _median([float(r.epochs) for _, r in drops])
    p, s = numbers["progressive_median_drop_pts"], numbers["single_phase_median_drop_pts"]
    verdict = SUPPORTED if s - p >= MIN_GAP_POINTS else REFUTED
    detail = (
        f"Median largest epoch-to-epoch fall of val/acc: progressive {p:.1f} vs single-phase"
        f" {s:.1f} points (best trials' {numbers['progressive_best_trial_drop_pts']:.1f} vs"
        f" {numbers['single_phase_best_trial_drop_pts']:.1f}; median epochs"
        f" {numbers['progressive_median_epochs']:g} vs {numbers['single_phase_median_epochs']:g})."
        f" Medians decide, progressive must be >= {MIN_GAP_POINTS:g} point lower;"
        f" {exp.ran('progressive')}, {exp.ran('single_phase')}."
    )
    return verdict, detail, numbers


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


def _check_sequential_forgetting(exp: _Experiment) -> _Outcome:
    """Supported when the median (over trials) of the mean relative drop of the tasks
    trained before the last phase exceeds 90%."""
    trials, missing = exp.trials("sequential")
    drops = _sequential_drops(trials)
    if missing or not drops:
        return NOT_TESTED, missing or "no sequential trial reports forgetting/ and best/", {}
    means = [mean for mean, _ in drops]
    numbers = {
        "median_drop_pct": _pct(_median(means)),
        "min_drop_pct": _pct(min(means)),
        "max_drop_pct": _pct(max(means)),
        "trials": float(len(drops)),
    }
    per_task: dict[str, list[float]] = defaultdict(list)
    for _, by_task in drops:
        for task, drop in by_task.items():
            per_task[task].append(drop)
    for task, values in sorted(per_task.items()):
        numbers[f"median_drop_pct/{task}"] = _pct(_median(values))
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


def _check_joint_no_forgetting(exp: _Experiment) -> _Outcome:
    """Supported when the median (over trials) of the worst task's relative drop is < 10%."""
    trials, missing = exp.trials("joint")
    worst = [
        (max(drops.values()), record)
        for record in trials
        if (drops := _relative_drops(record, _reported_tasks(record)))
    ]
    if missing or not worst:
        return NOT_TESTED, missing or "no joint trial reports forgetting/ and best/", {}
    values = [w for w, _ in worst]
    numbers = {
        "median_worst_drop_pct": _pct(_median(values)),
        "max_worst_drop_pct": _pct(max(values)),
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


def _check_ewc_ineffective(exp: _Experiment) -> _Outcome:
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
        f"{name}_median_drop_pct": _pct(_median([mean for mean, _ in drops]))
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


def _check_joint_beats_sequential(exp: _Experiment) -> _Outcome:
    """Supported when joint's best mean task metric beats sequential's by >= 1 point."""
    labels = ("joint", "sequential")
    numbers, context = _compare_best(exp, *labels, _TASKS)
    if numbers is None:
        return NOT_TESTED, context, {}
    verdict, reason = _better_by(numbers["best_gap_pts"], "sequential")
    detail = (
        f"Final mean task metric, {_gap_detail(numbers, labels, labels)}: {reason}."
        f" Best trials decide; {context}."
    )
    return verdict, detail, numbers


def _joint_trials_by_method(exp: _Experiment, method: str) -> list[TrialRecord]:
    trials, _ = exp.trials("joint")
    return [r for r in trials if _joint_method(r) == method]


def _check_loss_ratio_balanced(exp: _Experiment) -> _Outcome:
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
        index, phase = _joint_phase(record) or (0, {})
        per_epoch = []
        for row in exp.curves.get(record.trial_id, []):
            weights = [row.get(f"weight/{task}") for task in phase.get("tasks", ())]
            weights = [float(w) for w in weights if isinstance(w, (int, float)) and w > 0]
            if row.get("phase") == index and len(weights) > 1:
                per_epoch.append(max(weights) / min(weights))
        if per_epoch:
            ratios.append(max(per_epoch))
    if not ratios:
        return NOT_TESTED, "no loss-ratio joint trial reports weight/<task> in its joint phase", {}
    document = max(REPORTED_WEIGHTS.values()) / min(REPORTED_WEIGHTS.values())
    numbers = {
        "median_max_ratio": round(_median(ratios), 3),
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


def _check_dynamic_weighting_helps(exp: _Experiment) -> _Outcome:
    """Supported when the best loss-ratio joint trial beats the best equal-weighted one
    by >= 1 point of mean task metric."""
    _, missing = exp.trials("joint")
    if missing:
        return NOT_TESTED, missing, {}
    groups = {m: _scored(_joint_trials_by_method(exp, m), _TASKS) for m in ("loss_ratio", "equal")}
    for method, scored in groups.items():
        if not scored:
            return NOT_TESTED, f"no joint trial that ran its plan uses {method} weighting", {}
    labels = ("loss_ratio", "equal")
    numbers = _best_numbers(groups["loss_ratio"], groups["equal"], labels)
    verdict, reason = _better_by(numbers["best_gap_pts"], "equal weighting")
    detail = (
        f"Final mean task metric, {_gap_detail(numbers, labels, labels)}: {reason}."
        f" Best trials decide; other parameters differ between these trials"
        f" ({exp.ran('joint')})."
    )
    return verdict, detail, numbers


def _check_task_losses_decrease(exp: _Experiment) -> _Outcome:
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
        for task in _reported_tasks(record):
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


def _check_more_epochs_needed(exp: _Experiment) -> _Outcome:
    """Supported when at least half of the joint trials end still improving: their last
    epochs beat all earlier ones by >= 0.5 point of mean task metric."""
    if exp.curves is None:
        return NOT_TESTED, "needs the per-epoch table (epochs)", {}
    trials, missing = exp.trials("joint")
    if missing:
        return NOT_TESTED, missing, {}
    gains, lengths = [], []
    for record in trials:
        values = [_task_mean(row) for row in exp.curves.get(record.trial_id, [])]
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
        "median_gain_pts": round(_median(gains), 2),
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


def _check_fixed_lr_limits(exp: _Experiment) -> _Outcome:
    """Supported when the best decaying-lr joint trial beats the best fixed-lr one by
    >= 1 point of mean task metric (fixed: one lr, constant, in every phase)."""
    trials, missing = exp.trials("joint")
    if missing:
        return NOT_TESTED, missing, {}
    planned = [r for r in trials if r.plan]
    fixed = _scored([r for r in planned if _fixed_lr(r.plan) is not None], _TASKS)
    decayed = _scored([r for r in planned if _fixed_lr(r.plan) is None], _TASKS)
    if not fixed or not decayed:
        kind = "fixed" if not fixed else "decaying"
        return NOT_TESTED, f"no joint trial that ran its plan uses a {kind} learning rate", {}
    labels = ("decayed", "fixed")
    numbers = _best_numbers(decayed, fixed, labels)
    numbers["fixed_best_lr"] = float(_fixed_lr(fixed[0][1].plan))
    verdict, reason = _better_by(numbers["best_gap_pts"], "fixed lr")
    detail = (
        f"Final mean task metric, {_gap_detail(numbers, labels, labels)}; the best fixed-lr"
        f" trial uses lr {numbers['fixed_best_lr']:g}: {reason}. Best trials decide; other"
        f" parameters differ between these trials ({exp.ran('joint')})."
    )
    return verdict, detail, numbers


def _check_reported_weights(_: _Experiment) -> _Outcome:
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


_CHECKS: dict[str, Callable[[_Experiment], _Outcome]] = {
    "progressive_gain": _check_progressive_gain,
    "progressive_accuracy": _check_progressive_accuracy,
    "single_phase_accuracy": _check_single_phase_accuracy,
    "progressive_overfits_less": _check_overfits_less,
    "progressive_more_stable": _check_more_stable,
    "sequential_forgetting": _check_sequential_forgetting,
    "joint_no_forgetting": _check_joint_no_forgetting,
    "ewc_ineffective": _check_ewc_ineffective,
    "joint_beats_sequential": _check_joint_beats_sequential,
    "loss_ratio_balanced": _check_loss_ratio_balanced,
    "dynamic_weighting_helps": _check_dynamic_weighting_helps,
    "task_losses_decrease": _check_task_losses_decrease,
    "more_epochs_needed": _check_more_epochs_needed,
    "fixed_lr_limits": _check_fixed_lr_limits,
    "reported_weights": _check_reported_weights,
}


def _curves(epochs: pa.Table | None, trial_ids: set[str]) -> dict[str, list[dict[str, Any]]] | None:
    if epochs is None:
        return None
    by_trial: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in epochs.to_pylist():
        if row.get("trial_id") in trial_ids:
            by_trial[row["trial_id"]].append(row)
    return {
        tid: sorted(rows, key=lambda row: row.get("epoch") or 0) for tid, rows in by_trial.items()
    }


def check_claims(
    records: Sequence[TrialRecord], epochs: pa.Table | None = None
) -> list[ClaimVerdict]:
    """Every claim of :data:`CLAIMS`, decided on one experiment, then one ``not tested``
    line per strategy of the experiment's own, about which the documents claim nothing.

    Args:
        records: The experiment's trials (e.g. from :func:`analysis.results.trial_records`).
        epochs: Its per-epoch table; claims about curves are ``not tested`` without it.

    Returns:
        One verdict per claim, in :data:`CLAIMS` order.
    """
    ran = {r.trial_id for r in records if r.status in RAN_PLAN}
    experiment = _Experiment(records=tuple(records), curves=_curves(epochs, ran))
    verdicts = []
    for claim in CLAIMS:
        verdict, detail, numbers = _CHECKS[claim.id](experiment)
        verdicts.append(ClaimVerdict(claim, verdict, detail, numbers))
    own = dict.fromkeys(r.strategy for r in records if r.strategy not in DOCUMENTED_STRATEGIES)
    for strategy in own:
        claim = Claim(
            f"own:{strategy}",
            "experiment",
            f"{strategy} is a strategy of this experiment's own.",
            "",
        )
        detail = (
            f"The source documents make no claim about {strategy}, so there is nothing to"
            f" check; its trials are ranked with the others against the targets"
            f" ({experiment.ran(strategy)})."
        )
        verdicts.append(ClaimVerdict(claim, NOT_TESTED, detail, {}))
    return verdicts


def claims_table(verdicts: Sequence[ClaimVerdict]) -> list[dict[str, Any]]:
    """The verdicts as JSON-ready rows: the claim's fields, verdict, detail and numbers."""
    return [
        {
            **dataclasses.asdict(v.claim),
            "verdict": v.verdict,
            "detail": v.detail,
            "numbers": v.numbers,
        }
        for v in verdicts
    ]
