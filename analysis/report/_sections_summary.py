"""The report's opening section: which strategy, why, and how sure.

It is the part a reader may stop after, so it states its verdict in words and
backs it with the per-strategy numbers the later sections show in full.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from analysis.ranking import RankedTrial
from analysis.ranking_table import format_number
from analysis.report._blocks import _Block, _Bullets, _Heading, _Paragraph, _Table
from analysis.report._context import _Context, _finished_scores, _finite, _quote, _recipe
from analysis.targets import Target

__all__ = ["_summary"]


def _summary(context: _Context) -> list[_Block]:
    blocks: list[_Block] = [_Heading(2, "Summary")]
    usable = [item for item in context.ranked if not item.failed]
    counts: dict[str, int] = {}
    for item in context.ranked:
        counts[item.record.status] = counts.get(item.record.status, 0) + 1
    states = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none"
    blocks.append(
        _Paragraph(
            f"Experiment `{context.name}` in `{context.directory}`: {len(context.ranked)}"
            f" trials ({states}), {len(context.strategies)} strategies"
            f" ({', '.join(f'`{s}`' for s in context.strategies) or 'none'})."
        )
    )
    blocks.append(_targets_table(context.targets))
    if not usable:
        blocks.append(_Paragraph("No trial finished an epoch with finite metrics: no verdict."))
        return blocks
    best = usable[0]
    record = best.record
    missed = len(context.targets) - best.targets_met
    blocks.append(
        _Paragraph(
            f"**Which strategy: `{record.strategy}`.** Its trial `{record.trial_id}` ranks first:"
            f" {best.targets_met} of {len(context.targets)} targets met, target_score"
            f" {format_number(best.target_score)}, {record.epochs} epochs"
            f" ({_recipe(record.phase_plan)})."
            + (f" No trial meets every target; the best misses {missed}." if missed else "")
        )
    )
    blocks.append(_Paragraph("**Why:**"))
    blocks.append(_Bullets(tuple(_why(context, best))))
    blocks.append(_Paragraph("**How sure:**"))
    blocks.append(_Bullets(tuple(_how_sure(context, best))))
    blocks.append(_Heading(3, "Best trial of each strategy"))
    blocks.append(_best_per_strategy(context))
    return blocks


def _targets_table(targets: Sequence[Target]) -> _Table:
    return _Table(
        ("target", "threshold", "source"),
        tuple(
            (
                f"`{t.metric}`",
                f"{'>=' if t.direction == 'max' else '<='} {t.threshold:g}"
                + (" (assumed)" if t.assumed else ""),
                _quote(t.source),
            )
            for t in targets
        ),
    )


def _why(context: _Context, best: RankedTrial) -> list[str]:
    lines = []
    for target in context.targets:
        value = best.record.metrics.get(target.metric)
        if not _finite(value):
            lines.append(f"`{target.metric}` was not reported: the target counts as missed.")
            continue
        gap = abs(value - target.threshold)
        verdict = "met" if target.met(value) else f"missed by {format_number(gap)}"
        lines.append(
            f"`{target.metric}` {format_number(value)} against"
            f" {'>=' if target.direction == 'max' else '<='} {target.threshold:g}: {verdict}."
        )
    for strategy in context.strategies:
        if strategy == best.record.strategy:
            continue
        other = context.best_of(strategy)
        if other.failed:
            lines.append(f"Every `{strategy}` trial failed.")
            continue
        lines.append(
            f"`{strategy}`'s best trial `{other.record.trial_id}` meets {other.targets_met}"
            f" of {len(context.targets)} targets with target_score"
            f" {format_number(other.target_score)}"
            f" ({format_number(best.target_score - other.target_score)} lower) in"
            f" {other.record.epochs} epochs against {best.record.epochs}."
        )
    lines.append("The claims check below compares the strategies the way the source documents do.")
    return lines


def _how_sure(context: _Context, best: RankedTrial) -> list[str]:
    lines = []
    for strategy in context.strategies:
        trials = context.trials_of(strategy)
        scores = _finished_scores(trials)
        states = ", ".join(
            f"{sum(item.record.status == state for item in trials)} {state}"
            for state in dict.fromkeys(item.record.status for item in trials)
        )
        spread = (
            f"; finished trials' target_score median {format_number(statistics.median(scores))},"
            f" range {format_number(min(scores))} to {format_number(max(scores))}"
            if scores
            else "; none finished its plan"
        )
        lines.append(f"`{strategy}`: {len(trials)} trials ({states}){spread}.")
    winner = best.record.strategy
    # Scheduler-stopped trials score an unfinished model: as a spread they would
    # measure the scheduler, not how much a finished recipe's score varies.
    mine = _finished_scores(context.trials_of(winner))
    for strategy in context.strategies:
        other = context.best_of(strategy)
        if strategy == winner or other.failed or not mine:
            continue
        above = sum(score > other.target_score for score in mine)
        lines.append(
            f"{above} of {len(mine)} finished `{winner}` trials score above the best"
            f" `{strategy}` trial."
        )
        margin = best.target_score - other.target_score
        if len(mine) >= 3:
            spread = statistics.stdev(mine)
            judged = "larger" if margin > spread else "not larger"
            lines.append(
                f"The margin over `{strategy}` ({format_number(margin)}) is {judged} than the"
                f" spread of finished `{winner}` trials' scores (standard deviation"
                f" {format_number(spread)})."
            )
        else:
            lines.append(
                f"Fewer than 3 finished `{winner}` trials: too few to tell the margin over"
                f" `{strategy}` from the spread between configurations."
            )
    lines.append(
        "Each configuration ran once, so the spread between trials of a strategy is the only"
        " estimate of noise here."
    )
    return lines


def _best_per_strategy(context: _Context) -> _Table:
    rows = []
    for strategy in context.strategies:
        item = context.best_of(strategy)
        scores = _finished_scores(context.trials_of(strategy))
        rows.append(
            (
                f"`{strategy}`",
                f"`{item.record.trial_id}`",
                _recipe(item.record.phase_plan),
                *(format_number(item.record.metrics.get(m)) for m in context.metrics),
                f"{item.targets_met}/{len(context.targets)}",
                format_number(item.target_score),
                format_number(statistics.median(scores)) if scores else "-",
                f"{len(scores)}/{len(context.trials_of(strategy))}",
                str(item.record.epochs),
            )
        )
    return _Table(
        (
            "strategy",
            "best trial",
            "recipe",
            *context.metrics,
            "targets met",
            "target_score",
            "median (finished)",
            "finished trials",
            "epochs",
        ),
        tuple(rows),
    )
