"""What every figure of the report shares: the per-epoch curves, colours, the panel
grid, the drawing of phases and targets, and :func:`_save`.

The figure modules call ``_common._save`` through this module, not a name imported
from it, so that a test can replace ``_save`` here once and keep every figure it draws
instead of writing it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory

from analysis.targets import Target

__all__ = [
    "DPI",
    "PHASE_COLOR",
    "TARGET_COLOR",
    "Curves",
    "curves_by_trial",
    "phase_boundaries",
    "strategy_colors",
]

#: Per trial, per metric (``epoch`` included), the values in epoch order; NaN where
#: an epoch did not report the metric.
Curves = Mapping[str, Mapping[str, np.ndarray]]

DPI = 100
TARGET_COLOR = "crimson"
PHASE_COLOR = "0.55"
_PALETTE = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:cyan")


def curves_by_trial(epochs: pa.Table | None) -> dict[str, dict[str, np.ndarray]]:
    """The per-epoch table as curves, one entry per trial that reported an epoch."""
    if epochs is None or epochs.num_rows == 0 or "trial_id" not in epochs.column_names:
        return {}
    rows: dict[str, list[dict[str, Any]]] = {}
    for row in epochs.to_pylist():
        rows.setdefault(row["trial_id"], []).append(row)
    names = [n for n in epochs.column_names if n not in ("trial_id", "strategy")]
    curves = {}
    for trial_id, trial_rows in rows.items():
        trial_rows.sort(key=lambda r: r.get("epoch") or 0)
        curves[trial_id] = {name: _floats([r.get(name) for r in trial_rows]) for name in names}
    return curves


def strategy_colors(strategies: Sequence[str]) -> dict[str, str]:
    """One colour per strategy, stable across every figure of a report."""
    return {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(sorted(set(strategies)))}


def phase_boundaries(curve: Mapping[str, np.ndarray]) -> list[tuple[float, int]]:
    """Where a trial's phase changes: ``(x between the two epochs, new phase)``."""
    epoch, phase = curve.get("epoch"), curve.get("phase")
    if epoch is None or phase is None:
        return []
    return [
        ((epoch[i - 1] + epoch[i]) / 2, int(phase[i]))
        for i in range(1, len(phase))
        if np.isfinite(phase[i]) and np.isfinite(phase[i - 1]) and phase[i] != phase[i - 1]
    ]


# -- drawing pieces ----------------------------------------------------------


def _grid(
    panels: int, *, sharey: bool = False, height: float | None = None
) -> tuple[Figure, list[Axes]]:
    """A figure of at most 8x5 inches holding ``panels`` axes, at most 3 a row."""
    cols = min(panels, 3) if panels != 4 else 2
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(8.0, min(5.0, height or (2.5 * rows + 0.6))), dpi=DPI)
    grid = fig.subplots(rows, cols, squeeze=False, sharey=sharey)
    axes = list(grid.flat)
    for spare in axes[panels:]:
        spare.set_visible(False)
    return fig, axes[:panels]


def _save(fig: Figure, path: Path) -> Path:
    """Lay ``fig`` out, write it to ``path`` as a PNG and free its artists."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    fig.clear()
    return path


def _line(ax: Axes, x: np.ndarray, y: np.ndarray, **style: Any) -> None:
    # A trial that reported one epoch (or whose other points are NaN) would draw an
    # invisible line of length zero; a marker keeps it on the plot.
    lone = np.isfinite(y).sum() == 1
    ax.plot(x, y, marker="o" if lone else None, markersize=3 if lone else None, **style)


def _epoch_axis(ax: Axes) -> None:
    ax.set_xlabel("epoch", fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _legend(ax: Axes, **style: Any) -> None:
    # Only artists that drew something: an empty scatter or an axes whose trials are
    # all NaN would list a phantom entry or only warn.
    handles, labels = ax.get_legend_handles_labels()
    shown = [(h, lb) for h, lb in zip(handles, labels, strict=True) if _drew(h)]
    if shown:
        ax.legend(*zip(*shown, strict=True), **style)


def _drew(artist: Any) -> bool:
    offsets = getattr(artist, "get_offsets", None)
    return offsets is None or len(offsets()) > 0


def _phase_lines(ax: Axes, curve: Mapping[str, np.ndarray], names: Sequence[str]) -> None:
    top = blended_transform_factory(ax.transData, ax.transAxes)
    for x, phase in phase_boundaries(curve):
        ax.axvline(x, color=PHASE_COLOR, ls=":", lw=1.0)
        if 0 < phase <= len(names):
            # Vertical, because one-epoch phases put their boundaries an epoch apart.
            ax.text(
                x,
                0.98,
                names[phase - 1],
                transform=top,
                fontsize=6,
                color="0.3",
                rotation=90,
                ha="right",
                va="top",
            )


def _target_lines(
    ax: Axes, metric: str, targets: Sequence[Target], *, vertical: bool = False
) -> None:
    for target in targets:
        if target.metric != metric:
            continue
        sign = ">=" if target.direction == "max" else "<="
        label = f"target {sign} {target.threshold:g}" + (" (assumed)" if target.assumed else "")
        if vertical:
            ax.axvline(target.threshold, color=TARGET_COLOR, ls="--", lw=1.0)
            side = blended_transform_factory(ax.transData, ax.transAxes)
            ax.text(
                target.threshold,
                0.02,
                f" {label}",
                transform=side,
                rotation=90,
                fontsize=6,
                color=TARGET_COLOR,
                va="bottom",
            )
        else:
            _hline(ax, target.threshold, label)


def _hline(ax: Axes, y: float, label: str) -> None:
    ax.axhline(y, color=TARGET_COLOR, ls="--", lw=1.0)
    side = blended_transform_factory(ax.transAxes, ax.transData)
    ax.text(0.01, y, label, transform=side, fontsize=6, color=TARGET_COLOR, va="bottom")


# -- values ------------------------------------------------------------------


def _floats(values: Sequence[Any]) -> np.ndarray:
    return np.array([math.nan if v is None else float(v) for v in values], dtype=float)


def _has(curve: Mapping[str, np.ndarray], metric: str) -> bool:
    return metric in curve and "epoch" in curve and bool(np.isfinite(curve[metric]).any())


def _positive(values: np.ndarray) -> bool:
    return bool((np.isfinite(values) & (values > 0)).any())


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _finite_or_nan(value: Any) -> float:
    return float(value) if _finite(value) else math.nan


def _short(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "n/a"
