"""Figures over epochs: each strategy's learning curves, the learning rate of every
layer group and the task loss weights, with phase boundaries marked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

# Figures are saved with `_common._save`, looked up when called, so a test can replace it.
import analysis.plots._common as _common
from analysis.plots._common import (
    Curves,
    _epoch_axis,
    _grid,
    _has,
    _legend,
    _line,
    _phase_lines,
    _positive,
    _target_lines,
)
from analysis.targets import Target

__all__ = ["learning_curves", "lr_groups", "task_weights"]


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
    return _common._save(fig, path)


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
    return _common._save(fig, path)


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
    return _common._save(fig, path)


def _lr_names(curve: Mapping[str, np.ndarray]) -> list[str]:
    names = [n for n in curve if n.startswith("lr/group") and n[len("lr/group") :].isdigit()]
    return sorted(names, key=lambda n: int(n[len("lr/group") :]))


def _sequential_colors(count: int) -> list[tuple[float, ...]]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(i / max(count - 1, 1) * 0.9) for i in range(count)]
