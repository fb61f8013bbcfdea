"""Command-line behaviour that the other tests do not reach."""

from __future__ import annotations

from typer.testing import CliRunner

from search.cli import app


def test_pretrain_caches_the_backbone_once(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text(
        "dataset: {image_size: 16}\n"
        "model: {width: 4, pretrain: {num_samples: 300, num_classes: 5, epochs: 1}}\n"
    )
    first = CliRunner().invoke(app, ["pretrain", str(path)])
    assert first.exit_code == 0, first.output
    assert "pretrained backbone:" in first.output
    second = CliRunner().invoke(app, ["pretrain", str(path)])
    assert "cached backbone:" in second.output
    assert first.output.split(":", 1)[1].strip() == second.output.split(":", 1)[1].strip()


def test_pretrain_disabled_is_a_user_error(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text("model: {pretrain: {enabled: false}}\n")
    result = CliRunner().invoke(app, ["pretrain", str(path)])
    assert result.exit_code == 2
    assert "model.pretrain.enabled" in result.output


def test_help_lists_the_commands():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "train", "pretrain"):
        assert command in result.output


def test_ranking_table_marks_the_pareto_front_of_multi_task_targets():
    from rich.console import Console

    from analysis.ranking import TrialRecord, rank_trials
    from analysis.targets import MULTITASK
    from search.cli import ranking_table

    plan = {"strategy": "joint", "batch_size": 32, "phases": []}

    def record(trial_id: str, det: float, seg: float, cls: float) -> TrialRecord:
        metrics = {"val/det_map50": det, "val/seg_miou": seg, "val/cls_acc": cls, "epoch": 3}
        return TrialRecord(trial_id, "joint", {}, metrics, "done", plan)

    ranked = rank_trials(
        [record("a", 0.9, 0.4, 0.7), record("b", 0.5, 0.8, 0.7), record("c", 0.4, 0.3, 0.6)],
        MULTITASK.targets,
    )
    console = Console(width=200, record=True)
    console.print(ranking_table(ranked, MULTITASK.targets))
    cells = [line.split() for line in console.export_text().splitlines()]
    rank_of = {cell[3]: cell[1] for cell in cells if len(cell) > 3 and cell[3] in ("a", "b", "c")}
    # a and b trade detection against segmentation; c is beaten by both on everything.
    assert {rank_of["a"], rank_of["b"]} == {"1*", "2*"}
    assert rank_of["c"] == "3"
