"""The rich ranking table that ``run``, ``resume``, ``analyze`` and ``status`` print.

What goes in each row is decided by :func:`analysis.ranking_table.ranking_table_rows`;
this module only lays those rows out for a terminal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table

from analysis.ranking_table import format_number, ranking_table_rows

__all__ = ["ranking_table"]


def ranking_table(ranked: list[Any], targets: Sequence[Any], limit: int | None = None) -> Table:
    """Trials best first: each target's metric, forgetting of multi-task plans, verdicts."""
    rows = ranking_table_rows(ranked, targets, limit)
    table = Table(title="Trials ranked: targets met, then target_score, then epochs")
    # Several metric columns: drop the shared "val/" so the recipe keeps its width.
    headers = [m.removeprefix("val/") if rows.multi_metric else m for m in rows.metrics]
    table.add_column("#", justify="right")
    table.add_column("trial")
    table.add_column("strategy")
    table.add_column("recipe", min_width=30, ratio=1)
    for header in headers:
        table.add_column(header, justify="right")
    if rows.forgetting_tasks:
        table.add_column(f"forgetting\n{'/'.join(rows.forgetting_tasks)}", justify="right")
    table.add_column("targets", justify="right")
    table.add_column("target_score", justify="right")
    table.add_column("epochs", justify="right")
    table.add_column("status")
    if rows.multi_metric:
        table.caption = "*: on the Pareto front of the target metrics"
    for row in rows.rows:
        forgetting = "/".join("-" if v is None else f"{v:.2f}" for v in row.forgetting)
        table.add_row(
            f"{row.rank}*" if row.on_front else str(row.rank),
            row.trial_id,
            row.strategy,
            row.recipe,
            *(format_number(value) for value in row.metrics),
            *([forgetting] if rows.forgetting_tasks else []),
            f"{row.targets_met}/{row.targets}",
            format_number(row.target_score),
            str(row.epochs),
            row.status,
        )
    return table
