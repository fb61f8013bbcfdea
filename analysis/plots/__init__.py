"""The report's figures, drawn with matplotlib's object API onto Agg canvases.

Figures are built as :class:`matplotlib.figure.Figure` objects, never through
pyplot, so no display backend is touched and nothing stays open after saving.
Every function takes plain data, writes one PNG and returns its path, or returns
None when there is nothing to draw (a metric no trial reported, a strategy whose
trials all failed): an empty figure would say less than its absence.
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

from analysis.ranking import RAN_PLAN, TrialRecord
from analysis.targets import Target

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


def learning_curves(
    path: Path,
    strategy: str,
    curves: Curves,
    trial_ids: Sequence[str],
    best_id: str | None,
    metrics: Sequence[str],
    targets: Sequence[Target],
    *,
    color: str = "tab:blue",
    phase_names: Sequence[str] = (),
) -> Path | None:
    """Each metric vs epoch for one strategy's trials, its best trial drawn bold.

    The best trial's phase boundaries are dashed vertical lines (labelled with the
    phase names when known) and each target is a horizontal line with its label.
    """
    shown = [m for m in metrics if any(_has(curves.get(t, {}), m) for t in trial_ids)]
    if not shown:
        return None
    fig, axes = _grid(len(shown))
    best_curve = curves.get(best_id, {}) if best_id else {}
    for ax, metric in zip(axes, shown, strict=False):
        label = "other trials"
        for trial_id in trial_ids:
            curve = curves.get(trial_id, {})
            if not _has(curve, metric) or trial_id == best_id:
                continue
            _line(ax, curve["epoch"], curve[metric], color=color, alpha=0.35, lw=1.0, label=label)
            label = None
        if _has(best_curve, metric):
            _line(
                ax,
                best_curve["epoch"],
                best_curve[metric],
                color=color,
                lw=2.4,
                label=f"best {best_id}",
            )
        _phase_lines(ax, best_curve, phase_names if ax is axes[0] else ())
        _target_lines(ax, metric, targets)
        ax.set_title(metric, fontsize=9)
        _epoch_axis(ax)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25)
    _legend(axes[0], fontsize=7, loc="best")
    fig.suptitle(f"{strategy}: learning curves ({len(trial_ids)} trials)", fontsize=10)
    return _save(fig, path)


def lr_groups(
    path: Path,
    best: Mapping[str, str],
    curves: Curves,
    num_groups: int | None,
) -> Path | None:
    """Learning rate of every layer group over epochs, per strategy's best trial (log y).

    Group ``num_groups`` is the task heads; a frozen group (lr 0) has no point on a
    log axis, which is how it shows as frozen.
    """
    panels = [
        (strategy, trial_id, _lr_names(curves.get(trial_id, {})))
        for strategy, trial_id in best.items()
    ]
    panels = [p for p in panels if any(_positive(curves[p[1]][n]) for n in p[2])]
    if not panels:
        return None
    fig, axes = _grid(len(panels), sharey=True)
    for ax, (strategy, trial_id, names) in zip(axes, panels, strict=False):
        curve = curves[trial_id]
        colors = _sequential_colors(len(names))
        for i, (name, line_color) in enumerate(zip(names, colors, strict=True)):
            values = np.where(curve[name] > 0, curve[name], np.nan)
            group = int(name.removeprefix("lr/group"))
            heads = group == num_groups
            # Groups often share one lr; drawn from thick (input side) to thin, lines
            # that coincide stay visible as nested stripes. Steps, because an lr holds
            # for a whole epoch and changes at the phase boundaries between epochs.
            ax.plot(
                curve["epoch"],
                values,
                drawstyle="steps-mid",
                marker=".",
                markersize=4,
                color="black" if heads else line_color,
                ls="--" if heads else "-",
                lw=1.0 if heads else 1.0 + 0.6 * (len(names) - 1 - i),
                label="heads" if heads else f"group {group}",
            )
        ax.set_yscale("log")
        _phase_lines(ax, curve, ())
        ax.set_title(f"{strategy} (best {trial_id})", fontsize=9)
        _epoch_axis(ax)
        ax.tick_params(which="both", labelsize=7)
        ax.grid(alpha=0.25, which="both")
    axes[0].set_ylabel("learning rate", fontsize=8)
    _legend(axes[-1], fontsize=6, loc="best", ncol=2)
    fig.suptitle("Learning rate per layer group (0 = input side)", fontsize=10)
    return _save(fig, path)


def task_weights(path: Path, best: Mapping[str, str], curves: Curves) -> Path | None:
    """``weight/<task>`` over epochs for the best trial of each multi-task strategy."""
    panels = []
    for strategy, trial_id in best.items():
        curve = curves.get(trial_id, {})
        names = sorted(n for n in curve if n.startswith("weight/") and _has(curve, n))
        if names:
            panels.append((strategy, trial_id, names))
    if not panels:
        return None
    fig, axes = _grid(len(panels), sharey=True)
    for ax, (strategy, trial_id, names) in zip(axes, panels, strict=False):
        curve = curves[trial_id]
        for name in names:
            _line(ax, curve["epoch"], curve[name], lw=1.6, label=name.removeprefix("weight/"))
        _phase_lines(ax, curve, ())
        ax.set_title(f"{strategy} (best {trial_id})", fontsize=9)
        _epoch_axis(ax)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.25)
        _legend(ax, fontsize=7, loc="best")
    axes[0].set_ylabel("loss weight", fontsize=8)
    fig.suptitle("Task loss weights (a gap: the task was not trained that epoch)", fontsize=10)
    return _save(fig, path)


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
    return _save(fig, path)


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
    return _save(fig, path)


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
    return _save(fig, path)


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
    return _save(fig, path)


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


def _positions(values: Sequence[Any]) -> tuple[np.ndarray, list[str] | None]:
    """Numeric values as they are; anything else at integer positions with labels."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return np.array(values, dtype=float), None
    labels = sorted({str(v) for v in values})
    return np.array([labels.index(str(v)) for v in values], dtype=float), labels


def _lr_names(curve: Mapping[str, np.ndarray]) -> list[str]:
    names = [n for n in curve if n.startswith("lr/group") and n[len("lr/group") :].isdigit()]
    return sorted(names, key=lambda n: int(n[len("lr/group") :]))


def _sequential_colors(count: int) -> list[tuple[float, ...]]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(i / max(count - 1, 1) * 0.9) for i in range(count)]


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
