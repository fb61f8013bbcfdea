"""The report's figures one by one: the data they draw, nothing when there is nothing to draw.

Most tests keep the figure instead of saving it (``_save`` is replaced), so its axes,
lines and labels can be checked; one test writes each figure as a PNG and reads it back.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from matplotlib.figure import Figure
from PIL import Image

from analysis import plots
from analysis.ranking import TrialRecord
from analysis.targets import Target

ACC = Target("val/acc", 0.5)
LOSS = Target("val/loss", 1.0, direction="min", assumed=True)


@pytest.fixture
def drawn(monkeypatch):
    """The figures the functions draw, kept in order instead of written."""
    figures: list[Figure] = []

    def keep(fig, path):
        figures.append(fig)
        return path

    monkeypatch.setattr("analysis.plots._common._save", keep)
    return figures


def _axes(fig: Figure):
    return [ax for ax in fig.axes if ax.get_visible()]


def _curve(epochs, **metrics):
    curve = {"epoch": np.array(epochs, dtype=float)}
    curve.update({k: np.array(v, dtype=float) for k, v in metrics.items()})
    return curve


def _record(trial_id, strategy="progressive", status="done", params=None, **metrics):
    return TrialRecord(trial_id, strategy, params or {}, metrics, status)


# -- data ----------------------------------------------------------------------------------


def test_curves_by_trial_sorts_epochs_and_fills_missing_values_with_nan():
    table = pa.Table.from_pylist(
        [
            {"trial_id": "b", "strategy": "s", "epoch": 2, "val/acc": 0.4, "phase": 1},
            {"trial_id": "a", "strategy": "s", "epoch": 1, "val/acc": 0.1, "phase": 1},
            {"trial_id": "b", "strategy": "s", "epoch": 1, "val/acc": None, "phase": 1},
        ]
    )
    curves = plots.curves_by_trial(table)
    assert list(curves) == ["b", "a"]
    assert set(curves["b"]) == {"epoch", "val/acc", "phase"}  # no trial_id, no strategy
    assert curves["b"]["epoch"].tolist() == [1.0, 2.0]
    assert math.isnan(curves["b"]["val/acc"][0]) and curves["b"]["val/acc"][1] == 0.4
    assert curves["a"]["val/acc"].dtype == np.float64


@pytest.mark.parametrize(
    "table",
    [None, pa.table({"trial_id": pa.array([], pa.string())}), pa.table({"epoch": [1, 2]})],
    ids=["none", "empty", "no-trial-id"],
)
def test_no_epochs_give_no_curves(table):
    assert plots.curves_by_trial(table) == {}


def test_strategy_colours_are_stable_distinct_and_cycle_past_the_palette():
    colours = plots.strategy_colors(["joint", "progressive", "joint", "sequential"])
    assert colours == plots.strategy_colors(["sequential", "progressive", "joint"])
    assert list(colours) == ["joint", "progressive", "sequential"]
    assert len(set(colours.values())) == 3
    many = plots.strategy_colors([f"s{i}" for i in range(8)])
    assert len(set(many.values())) == 6 and many["s6"] == many["s0"]


def test_phase_boundaries_sit_between_the_epochs_where_the_phase_changes():
    curve = _curve([1, 2, 3, 4, 5, 6], phase=[1, 1, 2, math.nan, 3, 3])
    # The NaN row hides the 2 -> 3 change: no boundary is guessed there.
    assert plots.phase_boundaries(curve) == [(2.5, 2)]
    assert plots.phase_boundaries(_curve([1, 2, 3], phase=[1, 2, 3])) == [(1.5, 2), (2.5, 3)]
    assert plots.phase_boundaries(_curve([1, 2])) == []
    assert plots.phase_boundaries({"phase": np.array([1.0, 2.0])}) == []


def test_positions_keep_numbers_and_place_other_values_by_label():
    xs, labels = plots._positions([1e-3, 2, 0.5])
    assert xs.tolist() == [1e-3, 2.0, 0.5] and labels is None
    xs, labels = plots._positions(["cosine", "step", "cosine"])
    assert labels == ["cosine", "step"] and xs.tolist() == [0.0, 1.0, 0.0]
    xs, labels = plots._positions([True, False])  # booleans are categories
    assert labels == ["False", "True"] and xs.tolist() == [1.0, 0.0]


# -- figures ---------------------------------------------------------------------------------


def test_learning_curves_draw_a_panel_per_reported_metric_with_best_targets_and_phases(
    tmp_path, drawn
):
    curves = {
        "t1": _curve([1, 2, 3], **{"val/acc": [0.2, 0.4, 0.6], "phase": [1, 2, 2]}),
        "t2": _curve([1, 2, 3], **{"val/acc": [0.1, 0.2, 0.3], "phase": [1, 1, 2]}),
        "t3": _curve([1], **{"val/acc": [0.05]}),
    }
    path = plots.learning_curves(
        tmp_path / "c.png",
        "progressive",
        curves,
        ["t1", "t2", "t3"],
        "t1",
        ["val/acc", "val/f1"],  # nobody reported val/f1: no panel for it
        [ACC, LOSS],
        phase_names=["frozen", "full"],
    )
    assert path == tmp_path / "c.png"
    (fig,) = drawn
    (ax,) = _axes(fig)
    assert ax.get_title() == "val/acc"
    assert fig.get_suptitle() == "progressive: learning curves (3 trials)"
    lines = {line.get_label(): line for line in ax.get_lines()}
    best = lines["best t1"]
    assert best.get_linewidth() == 2.4 and best.get_ydata().tolist() == [0.2, 0.4, 0.6]
    # The other trials are thin; the one-epoch trial gets a marker to stay visible.
    solid = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
    thin = [line for line in solid if line.get_linewidth() == 1.0]
    assert len(thin) == 2 and thin[1].get_marker() == "o"
    # The best trial's phase boundary (dotted, labelled) and the target line at 0.5.
    dotted = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert [line.get_xdata()[0] for line in dotted] == [1.5]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert [line.get_ydata()[0] for line in dashed] == [0.5]
    texts = [text.get_text() for text in ax.texts]
    assert "full" in texts and "target >= 0.5" in texts
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["other trials", "best t1"]


def test_learning_curves_of_metrics_nobody_reported_are_no_figure(tmp_path, drawn):
    curves = {"t1": _curve([1, 2], **{"val/acc": [math.nan, math.nan]})}
    path = tmp_path / "c.png"
    assert plots.learning_curves(path, "s", curves, ["t1"], "t1", ["val/acc"], []) is None
    assert plots.learning_curves(path, "s", {}, ["t1"], None, ["val/acc"], []) is None
    assert drawn == [] and not path.exists()


def test_lr_groups_draw_each_group_on_a_log_axis_and_leave_frozen_epochs_out(tmp_path, drawn):
    curve = _curve(
        [1, 2, 3],
        **{
            "lr/group0": [0.0, 0.0, 1e-4],
            "lr/group1": [0.0, 1e-3, 1e-4],
            "lr/group2": [1e-2, 1e-2, 1e-3],
            "lr/groupx": [1.0, 1.0, 1.0],  # not a group number
            "phase": [1, 2, 3],
        },
    )
    plots.lr_groups(tmp_path / "lr.png", {"progressive": "t1", "gone": "t9"}, {"t1": curve}, 2)
    (fig,) = drawn
    (ax,) = _axes(fig)  # the strategy whose best trial has no curve has no panel
    assert ax.get_yscale() == "log" and ax.get_title() == "progressive (best t1)"
    lines = {line.get_label(): line for line in ax.get_lines() if line.get_linestyle() != ":"}
    assert set(lines) == {"group 0", "group 1", "heads"}
    assert np.isnan(lines["group 0"].get_ydata()[:2]).all()  # frozen: lr 0, no point
    heads = lines["heads"]
    assert heads.get_linestyle() == "--" and heads.get_color() == "black"
    # Input-side groups are drawn thicker, so coinciding lines stay visible.
    assert lines["group 0"].get_linewidth() > lines["group 1"].get_linewidth()


def test_lr_groups_with_no_positive_lr_are_no_figure(tmp_path, drawn):
    curve = _curve([1, 2], **{"lr/group0": [0.0, math.nan]})
    assert plots.lr_groups(tmp_path / "lr.png", {"s": "t1"}, {"t1": curve}, 1) is None
    assert plots.lr_groups(tmp_path / "lr.png", {}, {}, 1) is None
    assert drawn == []


def test_task_weights_draw_one_line_per_task_for_multi_task_strategies_only(tmp_path, drawn):
    curves = {
        "j": _curve([1, 2], **{"weight/seg": [1.0, 1.2], "weight/cls": [1.0, 0.8]}),
        "p": _curve([1, 2], **{"val/acc": [0.1, 0.2]}),
    }
    best = {"joint": "j", "progressive": "p"}
    assert plots.task_weights(tmp_path / "w.png", best, curves) is not None
    (fig,) = drawn
    (ax,) = _axes(fig)
    assert ax.get_title() == "joint (best j)"
    assert sorted(line.get_label() for line in ax.get_lines()) == ["cls", "seg"]
    assert plots.task_weights(tmp_path / "w.png", {"progressive": "p"}, curves) is None


def test_forgetting_bars_group_by_task_and_mark_what_was_not_measured(tmp_path, drawn):
    best = {
        "sequential": _record("s1", "sequential", **{"forgetting/seg": 0.25}),
        "joint": _record("j1", "joint", **{"forgetting/seg": 0.05, "forgetting/det": 0.1}),
        "progressive": _record("p1"),  # never measured: no bars
    }
    colours = plots.strategy_colors(best)
    plots.forgetting_bars(tmp_path / "f.png", best, ["seg", "det"], colours)
    (fig,) = drawn
    (ax,) = _axes(fig)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["seg", "det"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["sequential (s1)", "joint (j1)"]
    heights = [round(bar.get_height(), 3) for bar in ax.patches]
    assert heights == [0.25, 0.0, 0.05, 0.1]
    labels = [t.get_text() for t in ax.texts]
    assert labels == ["0.25", "n/a", "0.05", "0.10"]


def test_forgetting_bars_without_a_value_or_task_are_no_figure(tmp_path, drawn):
    best = {"joint": _record("j1", "joint", **{"forgetting/seg": math.nan})}
    assert plots.forgetting_bars(tmp_path / "f.png", best, ["seg"], {}) is None
    measured = {"joint": _record("j1", "joint", **{"forgetting/seg": 0.1})}
    assert plots.forgetting_bars(tmp_path / "f.png", measured, [], {}) is None
    assert drawn == []


def test_importance_bars_order_parameters_by_the_first_evaluator(tmp_path, drawn):
    importances = {
        "fanova": {"lr": 0.6, "epochs": 0.3},
        "mdi": {"epochs": 0.5, "lr": 0.4, "dropout": 0.1},
        "empty": {},
    }
    plots.importance_bars(tmp_path / "i.png", "progressive", importances)
    (fig,) = drawn
    (ax,) = _axes(fig)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["lr", "epochs", "dropout"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["fanova", "mdi"]
    widths = [bar.get_width() for bar in ax.patches]
    assert widths[:2] == [0.6, 0.3] and math.isnan(widths[2])  # fanova has no dropout
    assert plots.importance_bars(tmp_path / "i.png", "s", {"mdi": {}}) is None


def test_metric_vs_params_marks_status_and_best_and_picks_the_axis(tmp_path, drawn):
    records = [
        _record("a", params={"lr": 1e-4, "schedule": "cosine"}),
        _record("b", params={"lr": 1e-3, "schedule": "step"}),
        _record("c", status="stopped", params={"lr": 1e-2, "schedule": "cosine"}),
        _record("d", status="failed", params={"lr": 1e-3, "schedule": "step"}),
        _record("e", params={"lr": 3e-3}),  # no score: left out
    ]
    scores = {"a": 0.9, "b": 1.1, "c": 0.4, "d": 0.0}
    plots.metric_vs_params(
        tmp_path / "s.png", "progressive", records, scores, ["lr", "schedule", "absent"], "b"
    )
    (fig,) = drawn
    lr_ax, schedule_ax = _axes(fig)  # no panel for a parameter no trial has
    assert lr_ax.get_xscale() == "log"  # 1e-4 to 1e-2 spans decades
    assert [t.get_text() for t in schedule_ax.get_xticklabels()] == ["cosine", "step"]
    finished, stopped, failed, best = lr_ax.collections
    assert finished.get_offsets().tolist() == [[1e-4, 0.9]]
    assert stopped.get_offsets().tolist() == [[1e-2, 0.4]]
    assert failed.get_offsets().tolist() == [[1e-3, 0.0]]
    assert best.get_offsets().tolist() == [[1e-3, 1.1]]
    assert [line.get_ydata()[0] for line in lr_ax.get_lines()] == [1.0]  # all targets met


def test_metric_vs_params_without_scored_values_is_no_figure(tmp_path, drawn):
    records = [_record("a", params={"lr": 1e-3})]
    path = tmp_path / "s.png"
    assert plots.metric_vs_params(path, "s", records, {"a": math.nan}, ["lr"], "a") is None
    assert plots.metric_vs_params(path, "s", records, {"a": 1.0}, ["epochs"], "a") is None
    assert drawn == []


def test_pareto_pairs_plot_each_pair_of_target_metrics_and_ring_the_front(tmp_path, drawn):
    records = [
        _record("a", "joint", **{"val/acc": 0.6, "val/loss": 0.9}),
        _record("b", "sequential", **{"val/acc": 0.4, "val/loss": 0.5}),
        _record("c", "joint", **{"val/acc": 0.3, "val/loss": 1.5}),
        _record("d", "joint", status="failed", **{"val/acc": 0.9, "val/loss": 0.1}),
    ]
    colours = plots.strategy_colors(["joint", "sequential"])
    plots.pareto_pairs(tmp_path / "p.png", records, [ACC, LOSS], frozenset({"a", "b"}), colours)
    (fig,) = drawn
    (ax,) = _axes(fig)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("val/acc", "val/loss")
    joint, sequential, front = ax.collections
    assert joint.get_offsets().tolist() == [[0.6, 0.9], [0.3, 1.5]]  # the failed trial is out
    assert sequential.get_offsets().tolist() == [[0.4, 0.5]]
    assert sorted(front.get_offsets().tolist()) == [[0.4, 0.5], [0.6, 0.9]]
    # Each target is a line: val/loss across, val/acc upright.
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert [(line.get_xdata()[0], line.get_ydata()[0]) for line in dashed] == [(0, 1.0), (0.5, 0)]
    assert fig.get_suptitle() == "Per-task metrics, final epoch (2 trials on the front)"


def test_pareto_pairs_need_two_target_metrics_some_trial_reported(tmp_path, drawn):
    records = [_record("a", **{"val/acc": 0.6}), _record("b", status="failed", **{"val/loss": 1})]
    path = tmp_path / "p.png"
    assert plots.pareto_pairs(path, records, [ACC], frozenset(), {}) is None
    assert plots.pareto_pairs(path, records, [ACC, LOSS], frozenset(), {}) is None
    assert drawn == []


# -- files ---------------------------------------------------------------------------------


def test_a_figure_is_written_as_a_png_of_the_planned_size(tmp_path):
    curves = {"t1": _curve([1, 2], **{"val/acc": [0.2, 0.4], "val/loss": [2.0, 1.0]})}
    path = tmp_path / "deeper" / "curves.png"
    assert plots.learning_curves(path, "s", curves, ["t1"], "t1", ["val/acc"], [ACC]) == path
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (800, 310)  # 8 x (2.5 + 0.6) in
    # Four panels go two by two, five three to a row; never over 8 x 5 inches.
    for panels, rows, cols in ((1, 1, 1), (4, 2, 2), (5, 2, 3), (7, 3, 3)):
        fig, axes = plots._grid(panels)
        assert len(axes) == panels and len(fig.axes) == rows * cols
        assert tuple(fig.get_size_inches()) == (8.0, min(5.0, 2.5 * rows + 0.6))
