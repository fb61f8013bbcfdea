"""Command-line behaviour that the other tests do not reach."""

from __future__ import annotations

import pytest
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


#: A best config's resources from a search of 1-CPU trials (the default).
ONE_CPU = {
    "workers_per_trial": 1,
    "cpus_per_worker": 1.0,
    "gpus_per_worker": 0.0,
    "torch_threads": 1,
}
FOUR_CPUS = {**ONE_CPU, "cpus_per_worker": 4.0, "torch_threads": 4}


@pytest.mark.parametrize(
    ("recorded", "given", "cuda", "threads", "remarks"),
    [
        # The trial's own count by default, said on screen.
        (ONE_CPU, None, False, 1, ["torch threads: 1, as in the search's trial"]),
        # Asked for its own count: nothing to say.
        (ONE_CPU, 1, False, 1, []),
        (ONE_CPU, 2, False, 2, ["torch threads: 2, not the trial's 1"]),
        (FOUR_CPUS, None, False, 4, ["torch threads: 4"]),
        # A DDP trial cannot be matched in one process: torch's default, and why.
        ({**ONE_CPU, "workers_per_trial": 2}, None, False, None, ["on 2 workers (DDP)"]),
        (ONE_CPU, None, True, 1, ["torch threads: 1", "on a CPU, this trains it on a GPU"]),
        ({**ONE_CPU, "gpus_per_worker": 0.5}, None, False, 1, ["torch threads", "on a GPU, this"]),
        ({**ONE_CPU, "gpus_per_worker": 0.5}, None, True, 1, ["torch threads: 1"]),
        # A file from before the resources were recorded.
        (None, None, False, None, ["does not record the trial's torch threads; --threads 1"]),
        (None, 3, False, 3, ["does not record the trial's torch threads"]),
    ],
)
def test_retrain_uses_the_trials_torch_threads_and_says_what_differs(
    recorded, given, cuda, threads, remarks
):
    from search.cli import retrain_threads

    chosen, said = retrain_threads(recorded, given, cuda=cuda)
    assert chosen == threads
    assert len(said) == len(remarks)
    for line, expected in zip(said, remarks, strict=True):
        assert expected in line
