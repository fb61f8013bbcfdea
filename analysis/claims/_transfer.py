"""The transfer-learning document's claims: progressive against single-phase training.

All of them compare ``val/acc`` (and ``train/acc``) of the two strategies' trials; the
stability claim also needs the per-epoch table.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from analysis.claims._catalogue import NOT_TESTED, REFUTED, SUPPORTED
from analysis.claims._common import (
    MIN_GAP_POINTS,
    Experiment,
    Outcome,
    Score,
    best_first,
    better_by,
    compare_best,
    final_metric,
    gap_detail,
    median_of,
    percent,
)
from analysis.ranking import TrialRecord

__all__ = ["CLAIMED_GAP", "TRANSFER_CHECKS"]

#: Gap (points) by which progressive training is claimed to beat single-phase training.
CLAIMED_GAP = (2.0, 5.0)

_ACC = Score("val/acc", lambda r: final_metric(r, "val/acc"))


def _check_progressive_gain(exp: Experiment) -> Outcome:
    """Supported when progressive's best final val/acc beats single-phase's by >= 2 points."""
    labels = ("progressive", "single_phase")
    numbers, context = compare_best(exp, *labels, _ACC)
    if numbers is None:
        return NOT_TESTED, context, {}
    gap = numbers["best_gap_pts"]
    verdict, reason = better_by(gap, "single-phase", CLAIMED_GAP)
    detail = (
        f"Final val/acc, {gap_detail(numbers, labels, ('progressive', 'single-phase'))}:"
        f" {reason}. Best trials decide; {context}."
    )
    return verdict, detail, numbers


def _accuracy_range(exp: Experiment, strategy: str, low: float, high: float) -> Outcome:
    """Supported when the strategy's best final val/acc lies in [low, high] percent."""
    trials, missing = exp.trials(strategy)
    scored = best_first(trials, _ACC)
    if missing or not scored:
        return NOT_TESTED, missing or f"no {strategy} trial reports val/acc", {}
    best = percent(scored[0][0])
    median = percent(median_of([v for v, _ in scored]))
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


def _check_progressive_accuracy(exp: Experiment) -> Outcome:
    return _accuracy_range(exp, "progressive", 85.0, 95.0)


def _check_single_phase_accuracy(exp: Experiment) -> Outcome:
    return _accuracy_range(exp, "single_phase", 80.0, 90.0)


def _train_val_gaps(trials: Sequence[TrialRecord]) -> list[tuple[float, TrialRecord]]:
    gaps = []
    for record in trials:
        train, val = final_metric(record, "train/acc"), final_metric(record, "val/acc")
        if train is not None and val is not None:
            gaps.append((train - val, record))
    return gaps


def _check_overfits_less(exp: Experiment) -> Outcome:
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
        numbers[f"{strategy}_median_overfit_pts"] = percent(
            median_of([max(g, 0.0) for g, _ in pairs])
        )
        numbers[f"{strategy}_median_gap_pts"] = percent(median_of([g for g, _ in pairs]))
        best = max(pairs, key=lambda pair: (final_metric(pair[1], "val/acc"), pair[1].trial_id))
        numbers[f"{strategy}_best_trial_gap_pts"] = percent(best[0])
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


def _check_more_stable(exp: Experiment) -> Outcome:
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
        best = max(
            drops, key=lambda pair: (final_metric(pair[1], "val/acc") or 0.0, pair[1].trial_id)
        )
        numbers[f"{strategy}_median_drop_pts"] = percent(median_of([d for d, _ in drops]))
        numbers[f"{strategy}_best_trial_drop_pts"] = percent(best[0])
        numbers[f"{strategy}_median_epochs"] = median_of([float(r.epochs) for _, r in drops])
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


#: The check of each transfer claim, by claim id.
TRANSFER_CHECKS: dict[str, Callable[[Experiment], Outcome]] = {
    "progressive_gain": _check_progressive_gain,
    "progressive_accuracy": _check_progressive_accuracy,
    "single_phase_accuracy": _check_single_phase_accuracy,
    "progressive_overfits_less": _check_overfits_less,
    "progressive_more_stable": _check_more_stable,
}
