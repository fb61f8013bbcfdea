"""Bar charts: forgetting per task of each strategy's best trial, and parameter
importance per evaluator."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

# Figures are saved with `_common._save`, looked up when called, so a test can replace it.
import analysis.plots._common as _common
from analysis.plots._common import _PALETTE, DPI, _finite_or_nan, _short
from analysis.ranking import TrialRecord

__all__ = ["forgetting_bars", "importance_bars"]


def forgetting_bars(
    path: Path, best: Mapping[str, TrialRecord], tasks: Sequence[str], colors: Mapping[str, str]
) -> Path | None:
    """Final ``forgetting/<task>`` of each strategy's best trial, grouped by task."""
    values = {
        strategy: [_finite_or_nan(record.metrics.get(f"forgetting/{t}")) for t in tasks]
        for strategy, record in best.items()
    }
    values = {s: v for s, v in values.items() if any(math.isfinite(x) for x in v)}
    if not values or not tasks:
        return None
    fig = Figure(figsize=(6.5, 3.6), dpi=DPI)
    ax = fig.add_subplot()
    width = 0.8 / len(values)
    x = np.arange(len(tasks))
    for i, (strategy, heights) in enumerate(values.items()):
        bars = ax.bar(
            x + (i - (len(values) - 1) / 2) * width,
            np.nan_to_num(heights),
            width,
            color=colors.get(strategy),
            label=f"{strategy} ({best[strategy].trial_id})",
        )
        ax.bar_label(bars, labels=[_short(h) for h in heights], fontsize=7, padding=2)
    ax.set_xticks(x, list(tasks))
    ax.set_ylabel("drop from the task's best (final)", fontsize=8)
    ax.margins(y=0.15)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.25, axis="y")
    ax.legend(fontsize=7)
    fig.suptitle("Forgetting per task, best trial of each strategy", fontsize=10)
    return _common._save(fig, path)


def importance_bars(
    path: Path, strategy: str, importances: Mapping[str, Mapping[str, float]]
) -> Path | None:
    """Horizontal bars: each parameter's importance per evaluator (``{evaluator: {param:
    value}}``), parameters ordered by the first evaluator."""
    importances = {e: v for e, v in importances.items() if v}
    if not importances:
        return None
    order: list[str] = []
    for values in importances.values():
        order += [p for p in values if p not in order]
    order = order[:12]
    fig = Figure(figsize=(6.5, min(5.0, 1.2 + 0.32 * len(order) * len(importances))), dpi=DPI)
    ax = fig.add_subplot()
    height = 0.8 / len(importances)
    y = np.arange(len(order))
    for i, (evaluator, values) in enumerate(importances.items()):
        ax.barh(
            y + (i - (len(importances) - 1) / 2) * height,
            [_finite_or_nan(values.get(p)) for p in order],
            height,
            color=_PALETTE[i % len(_PALETTE)],
            label=evaluator,
        )
    ax.set_yticks(y, order)
    ax.invert_yaxis()
    ax.set_xlabel("importance (share of target_score variance)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.25, axis="x")
    ax.legend(fontsize=7)
    fig.suptitle(f"{strategy}: parameter importance", fontsize=10)
    return _common._save(fig, path)
