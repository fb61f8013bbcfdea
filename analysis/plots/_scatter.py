"""Scatter plots of trials: ``target_score`` against parameters, and every pair of
target metrics with the Pareto front ringed."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Figures are saved with `_common._save`, looked up when called, so a test can replace it.
import analysis.plots._common as _common
from analysis.plots._common import _finite, _grid, _hline, _legend, _target_lines
from analysis.ranking import RAN_PLAN, TrialRecord
from analysis.targets import Target

__all__ = ["metric_vs_params", "pareto_pairs"]


def metric_vs_params(
    path: Path,
    strategy: str,
    records: Sequence[TrialRecord],
    scores: Mapping[str, float],
    params: Sequence[str],
    best_id: str | None,
    *,
    color: str = "tab:blue",
    chosen_by: str = "its most important parameters",
) -> Path | None:
    """``target_score`` against each of ``params`` (scatter, one point per trial).

    Finished trials are filled, trials the scheduler stopped hollow (their score is an
    unfinished model's) and failed ones crosses. Categorical values sit at integer
    positions labelled with the value; a positive numeric parameter spanning a decade
    or more gets a log axis. The line at 1.0 is where every target is met exactly.
    """
    panels = []
    for param in params:
        points = [
            (record.params.get(param), scores.get(record.trial_id, math.nan), record)
            for record in records
        ]
        points = [p for p in points if p[0] is not None and math.isfinite(p[1])]
        if points:
            panels.append((param, points))
    if not panels:
        return None
    fig, axes = _grid(len(panels), sharey=True, height=3.2)
    for ax, (param, points) in zip(axes, panels, strict=False):
        xs, labels = _positions([p[0] for p in points])
        ys = np.array([p[1] for p in points])
        status = np.array([p[2].status for p in points])
        is_best = np.array([p[2].trial_id == best_id for p in points])
        finished = np.isin(status, RAN_PLAN) & ~is_best
        stopped = (status == "stopped") & ~is_best
        failed = (status == "failed") & ~is_best
        ax.scatter(xs[finished], ys[finished], s=22, color=color, label="finished")
        ax.scatter(
            xs[stopped], ys[stopped], s=22, facecolors="none", edgecolors=color, label="stopped"
        )
        ax.scatter(xs[failed], ys[failed], s=26, marker="x", color="0.35", label="failed")
        ax.scatter(
            xs[is_best], ys[is_best], s=80, marker="*", color="black", label=f"best {best_id}"
        )
        if labels is not None:
            ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=7)
            ax.set_xlim(-0.5, len(labels) - 0.5)
        elif np.all(xs > 0) and xs.max() / xs.min() >= 10:
            ax.set_xscale("log")
        _hline(ax, 1.0, "all targets met")
        ax.set_xlabel(param, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25)
    axes[0].set_ylabel("target_score", fontsize=8)
    _legend(axes[0], fontsize=7, loc="best")
    fig.suptitle(f"{strategy}: target_score vs {chosen_by}", fontsize=10)
    return _common._save(fig, path)


def pareto_pairs(
    path: Path,
    records: Sequence[TrialRecord],
    targets: Sequence[Target],
    front: frozenset[str],
    colors: Mapping[str, str],
) -> Path | None:
    """Every pair of target metrics as a scatter of the trials' final values, coloured by
    strategy; trials on the Pareto front are ringed and each target is a line."""
    metrics = list(dict.fromkeys(t.metric for t in targets))
    pairs = [(a, b) for i, a in enumerate(metrics) for b in metrics[i + 1 :]]
    usable = [r for r in records if r.status != "failed"]
    pairs = [
        (a, b)
        for a, b in pairs
        if any(_finite(r.metrics.get(a)) and _finite(r.metrics.get(b)) for r in usable)
    ]
    if not pairs:
        return None
    fig, axes = _grid(len(pairs), height=3.4)
    for ax, (a, b) in zip(axes, pairs, strict=False):
        points = [
            (r.metrics[a], r.metrics[b], r)
            for r in usable
            if _finite(r.metrics.get(a)) and _finite(r.metrics.get(b))
        ]
        for strategy in sorted({p[2].strategy for p in points}):
            mine = [p for p in points if p[2].strategy == strategy]
            ax.scatter(
                [p[0] for p in mine],
                [p[1] for p in mine],
                s=24,
                color=colors.get(strategy),
                label=strategy,
                zorder=3,
            )
        on_front = [p for p in points if p[2].trial_id in front]
        if on_front:
            ax.scatter(
                [p[0] for p in on_front],
                [p[1] for p in on_front],
                s=110,
                facecolors="none",
                edgecolors="black",
                linewidths=1.3,
                label="Pareto front",
                zorder=4,
            )
        _target_lines(ax, b, targets)
        _target_lines(ax, a, targets, vertical=True)
        ax.set_xlabel(a, fontsize=8)
        ax.set_ylabel(b, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25)
    _legend(axes[0], fontsize=7, loc="best")
    fig.suptitle(f"Per-task metrics, final epoch ({len(front)} trials on the front)", fontsize=10)
    return _common._save(fig, path)


def _positions(values: Sequence[Any]) -> tuple[np.ndarray, list[str] | None]:
    """Numeric values as they are; anything else at integer positions with labels."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return np.array(values, dtype=float), None
    labels = sorted({str(v) for v in values})
    return np.array([labels.index(str(v)) for v in values], dtype=float), labels
