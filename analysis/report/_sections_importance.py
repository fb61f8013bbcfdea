"""The report's parameter-importance section: what, within a strategy, moved the score.

Each strategy is analysed from its own trials alone, since parameters of
different strategies share neither names nor meaning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from analysis import plots
from analysis.ranking import RankedTrial
from analysis.ranking_table import format_number
from analysis.report._blocks import _Block, _Heading, _Image, _Paragraph, _Table
from analysis.report._context import _Context, _records

if TYPE_CHECKING:
    from spaces import StrategySpace

__all__ = ["IMPORTANCE_ROWS", "SCATTER_EVALUATOR", "SCATTER_PARAMS", "_importance"]

#: Evaluator whose ranking picks the parameters plotted against target_score.
SCATTER_EVALUATOR = "fanova"
SCATTER_PARAMS = 3
IMPORTANCE_ROWS = 10


def _importance(context: _Context, spaces: Mapping[str, StrategySpace]) -> list[_Block]:
    # Deferred: analysis.importance loads the strategy spaces and with them torch,
    # which importing the report package must not.
    from analysis.importance import parameter_importance

    blocks: list[_Block] = [_Heading(2, "Parameter importance")]
    results = parameter_importance(_records(context.ranked), context.targets, spaces)
    blocks.append(
        _Paragraph(
            "How much of each strategy's target_score variation each parameter explains"
            " (fANOVA and PED-ANOVA, from the trials of that strategy alone)."
        )
    )
    by_strategy: dict[str, list[Any]] = {}
    for result in results:
        by_strategy.setdefault(result.strategy, []).append(result)
    scores = {item.record.trial_id: item.target_score for item in context.ranked}
    for strategy, found in by_strategy.items():
        blocks.append(_Heading(3, f"`{strategy}`"))
        values = {r.evaluator: dict(r.importances) for r in found if r.importances}
        # Evaluators that could not run usually share one reason; say it once.
        notes = dict.fromkeys(r.note for r in found if r.note)
        for note in notes:
            names = ", ".join(r.evaluator for r in found if r.note == note)
            blocks.append(_Paragraph(f"No importance ({names}): {note}."))
        if values:
            params = list(dict.fromkeys(p for v in values.values() for p in v))
            rows = tuple(
                (f"`{p}`", *(format_number(v.get(p)) for v in values.values()))
                for p in params[:IMPORTANCE_ROWS]
            )
            blocks.append(_Table(("parameter", *values), rows))
            path = plots.importance_bars(context.image(f"importance_{strategy}"), strategy, values)
            if path is not None:
                blocks.append(_Image(path, f"Parameter importance of `{strategy}`."))
        params, how = _scatter_params(values, context.trials_of(strategy))
        trials = _records(context.trials_of(strategy))
        best = context.best_of(strategy) if trials else None
        path = plots.metric_vs_params(
            context.image(f"score_vs_params_{strategy}"),
            strategy,
            trials,
            scores,
            params,
            best.record.trial_id if best and not best.failed else None,
            color=context.colors.get(strategy, "tab:blue"),
            chosen_by=how,
        )
        if path is not None:
            blocks.append(_Image(path, f"target_score of each `{strategy}` trial vs {how}."))
    if not by_strategy:
        blocks.append(_Paragraph("No strategy had trials to analyse."))
    return blocks


def _scatter_params(
    values: Mapping[str, Mapping[str, float]], trials: Sequence[RankedTrial]
) -> tuple[list[str], str]:
    """The parameters to plot target_score against, and how they were chosen."""
    for evaluator in (SCATTER_EVALUATOR, *values):
        if values.get(evaluator):
            chosen = list(values[evaluator])[:SCATTER_PARAMS]
            return chosen, f"its {len(chosen)} most important parameters ({evaluator})"
    # Without an importance estimate the parameters that vary are still worth a look.
    varying = []
    for name in dict.fromkeys(p for item in trials for p in item.record.params):
        seen = {repr(item.record.params.get(name)) for item in trials}
        if len(seen) > 1:
            varying.append(name)
    chosen = varying[:SCATTER_PARAMS]
    return chosen, "parameters that vary between its trials (no importance estimate)"
