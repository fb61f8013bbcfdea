"""The report's ranking table and its check of the source documents' claims.

Both compare trials across strategies: the ranking by the targets, the claims
by the comparisons the papers themselves make.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from analysis import plots
from analysis.ranking_table import format_number, ranking_table_rows
from analysis.report._blocks import _Block, _Heading, _Image, _Paragraph, _Table
from analysis.report._context import _Context, _quote, _records

__all__ = ["_claims", "_ranking"]


def _ranking(context: _Context, top: int) -> list[_Block]:
    shown = min(top, len(context.ranked))
    blocks: list[_Block] = [_Heading(2, f"Ranking (top {shown})" if shown else "Ranking")]
    if not context.ranked:
        return [*blocks, _Paragraph("No trial has reported yet.")]
    table = ranking_table_rows(context.ranked, context.targets, top)
    front = table.front
    blocks.append(
        _Paragraph(
            "Ordered by targets met, then target_score, then fewer epochs; metrics are the"
            " final epoch's."
            + (
                f" ★ marks the {len(front)} trials on the Pareto front of the per-task"
                " metrics (no other trial is at least as good on every target metric and"
                " better on one)."
                if context.multi_metric
                else ""
            )
        )
    )
    rows = [
        (
            str(row.rank),
            f"`{row.trial_id}`",
            row.strategy,
            row.recipe,
            *(format_number(value) for value in row.metrics),
            f"{row.targets_met}/{row.targets}",
            format_number(row.target_score),
            str(row.epochs),
            row.status,
            *(["★" if row.on_front else ""] if table.multi_metric else []),
        )
        for row in table.rows
    ]
    headers = (
        "#",
        "trial",
        "strategy",
        "recipe",
        *table.metrics,
        "targets",
        "target_score",
        "epochs",
        "status",
        *(["Pareto"] if table.multi_metric else []),
    )
    blocks.append(_Table(headers, tuple(rows)))
    if context.multi_metric:
        path = plots.pareto_pairs(
            context.image("pareto"),
            _records(context.ranked),
            context.targets,
            front,
            context.colors,
        )
        if path is not None:
            blocks.append(
                _Image(path, "Per-task metrics of every trial, pairwise; ringed: Pareto front.")
            )
    return blocks


def _claims(verdicts: Sequence[Any]) -> list[_Block]:
    blocks: list[_Block] = [_Heading(2, "Claims of the source documents")]
    if not verdicts:
        return [*blocks, _Paragraph("No claim of the source documents concerns these trials.")]
    counts: dict[str, int] = {}
    for verdict in verdicts:
        counts[verdict.verdict] = counts.get(verdict.verdict, 0) + 1
    blocks.append(_Paragraph(", ".join(f"{n} {v}" for v, n in sorted(counts.items())) + "."))
    rows = tuple(
        (
            f"**{v.claim.id}**: {v.claim.statement}",
            f"**{v.verdict}**",
            v.detail,
            f"{_quote(v.claim.source)} ({v.claim.document})",
        )
        for v in verdicts
    )
    blocks.append(_Table(("claim", "verdict", "detail", "source"), rows))
    return blocks
