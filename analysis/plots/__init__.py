"""The report's figures, drawn with matplotlib's object API onto Agg canvases.

Figures are built as :class:`matplotlib.figure.Figure` objects, never through
pyplot, so no display backend is touched and nothing stays open after saving.
Every function takes plain data, writes one PNG and returns its path, or returns
None when there is nothing to draw (a metric no trial reported, a strategy whose
trials all failed): an empty figure would say less than its absence.

The figures live in ``_curves`` (over epochs), ``_bars`` and ``_scatter``; what they
share, saving included, in ``_common``.
"""

from __future__ import annotations

# `_grid` and `_positions` are private; they are imported "as" themselves to re-export
# them, because the tests check the panel grid and the categorical positions directly.
from analysis.plots._bars import forgetting_bars, importance_bars
from analysis.plots._common import Curves, curves_by_trial, phase_boundaries, strategy_colors
from analysis.plots._common import _grid as _grid
from analysis.plots._curves import learning_curves, lr_groups, task_weights
from analysis.plots._scatter import _positions as _positions
from analysis.plots._scatter import metric_vs_params, pareto_pairs

__all__ = [
    "Curves",
    "curves_by_trial",
    "forgetting_bars",
    "importance_bars",
    "learning_curves",
    "lr_groups",
    "metric_vs_params",
    "pareto_pairs",
    "phase_boundaries",
    "strategy_colors",
    "task_weights",
]
