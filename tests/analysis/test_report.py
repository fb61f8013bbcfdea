"""The report: files, embedded figures, and the sections that answer which strategy and why.

Two small experiment directories are written the way a search leaves them
(``tune/<trial>/params.json`` and ``result.json``, ``plans/<trial>.json``,
``experiment.yaml``): one single-task, one multi-task, each with a trial that
reported one epoch, a trial that ended in NaN and one that failed before reporting.
"""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from analysis.claims import check_claims
from analysis.ranking import rank_trials
from analysis.report import ReportFiles, write_report
from analysis.results import load_results, trial_records
from analysis.targets import TARGET_SETS, target_score
from search.cli import app
from search.config import load_experiment

NUM_GROUPS = 6


def _phase(name, epochs, tasks, lr, trainable="all", weighting="equal"):
    return {
        "name": name,
        "epochs": epochs,
        "trainable": trainable,
        "lr": lr,
        "lr_schedule": {"kind": "constant"},
        "tasks": list(tasks),
        "weighting": {"method": weighting, "params": {}},
        "task_sampling": "joint",
    }


def _write_trial(root, trial_id, strategy, params, phases, curve, *, complete=True, error=None):
    """One trial as Tune and the search leave it; ``curve(epoch, phase)`` gives metrics."""
    trial_dir = root / "tune" / trial_id
    trial_dir.mkdir(parents=True)
    (trial_dir / "params.json").write_text(json.dumps({"strategy": strategy, strategy: params}))
    plan = {"strategy": strategy, "phases": phases, "batch_size": 32}
    (root / "plans").mkdir(exist_ok=True)
    (root / "plans" / f"{trial_id}.json").write_text(json.dumps(plan))
    if error is not None:
        (trial_dir / "error.txt").write_text(f"Traceback\n{error}\n")
    lines, epoch = [], 0
    for number, phase in enumerate(phases, start=1):
        for _ in range(phase["epochs"]):
            epoch += 1
            lines.append(curve(epoch, number, phase))
    if lines:
        lines[-1]["plan_complete"] = int(complete)
    (trial_dir / "result.json").write_text("".join(json.dumps(line) + "\n" for line in lines))


def _common(epoch, number, phase, targets, metrics):
    frozen = NUM_GROUPS - (NUM_GROUPS if phase["trainable"] == "all" else phase["trainable"])
    row = {
        "epoch": epoch,
        "phase": number,
        "training_iteration": epoch,
        "plan_progress": epoch / 10,
        "val/loss": 3.0 / epoch,
        "train/loss": 2.5 / epoch,
        **{f"lr/group{k}": 0.0 if k < frozen else phase["lr"] for k in range(NUM_GROUPS)},
        f"lr/group{NUM_GROUPS}": phase["lr"] * 2,
        **metrics,
    }
    row["target_score"] = target_score(row, targets)
    return row


def _signs(root: Path, *, slope: dict[str, float]) -> None:
    """Single task: five progressive trials (one stopped after an epoch), three
    single-phase ones (one ending in NaN, one failed before reporting)."""
    (root / "experiment.yaml").write_text(
        "name: signs\nstrategies: {progressive: {space: {}}, single_phase: {space: {}}}\n"
        "targets: nsl\n"
    )
    targets = TARGET_SETS["nsl"].targets

    def curve(rate, nan_at=None):
        def row(epoch, number, phase):
            acc = math.nan if epoch == nan_at else min(0.97, rate * epoch)
            metrics = {"val/acc": acc, "train/acc": acc + 0.05, "val/cls_acc": acc}
            return _common(epoch, number, phase, targets, metrics)

        return row

    for i, (base_lr, frozen) in enumerate([(1e-3, 2), (3e-3, 1), (1e-2, 1), (3e-4, 2)]):
        trial_id = f"prog{i}"
        phases = [
            _phase("frozen", frozen, ["cls"], base_lr, trainable=0),
            _phase("partial", 1, ["cls"], base_lr / 10, trainable=2),
            _phase("full", 2, ["cls"], base_lr / 100),
        ]
        params = {"base_lr": base_lr, "frozen_epochs": frozen, "batch_size": 32, "dropout": 0.2}
        _write_trial(root, trial_id, "progressive", params, phases, curve(slope[trial_id]))
    _write_trial(
        root,
        "prog_short",
        "progressive",
        {"base_lr": 5e-3, "frozen_epochs": 3},
        [_phase("frozen", 1, ["cls"], 5e-3, trainable=0)],
        curve(0.1),
        complete=False,
    )
    for trial_id, lr in (("single0", 1e-4), ("single1", 3e-4)):
        phases = [_phase("single_phase", 6, ["cls"], lr)]
        _write_trial(root, trial_id, "single_phase", {"lr": lr, "epochs": 6}, phases, curve(0.1))
    _write_trial(
        root,
        "single_nan",
        "single_phase",
        {"lr": 1e-1, "epochs": 3},
        [_phase("single_phase", 3, ["cls"], 1e-1)],
        curve(0.1, nan_at=3),
    )
    _write_trial(
        root,
        "single_crash",
        "single_phase",
        {"lr": 1e-1, "epochs": 3},
        [],
        curve(0.1),
        error="RuntimeError: CUDA out of memory",
    )


def _scenes(root: Path) -> None:
    """Multi-task: four joint trials (one never reports segmentation), a sequential
    trial, and a sequential one stopped after its first epoch."""
    (root / "experiment.yaml").write_text(
        "name: scenes\ndataset: {kind: synthetic_scenes}\n"
        "strategies: {joint: {space: {}}, sequential: {space: {}}}\ntargets: multitask\n"
    )
    targets = TARGET_SETS["multitask"].targets
    tasks = ("seg", "det", "cls")

    def curve(level, *, skip=(), forget=0.0):
        def row(epoch, number, phase):
            grow = 1 - math.exp(-epoch / 2)
            values = {"val/seg_miou": level[0], "val/det_map50": level[1], "val/cls_acc": level[2]}
            metrics = {name: value * grow for name, value in values.items() if name not in skip}
            metrics["val/acc"] = metrics["val/cls_acc"]
            for task in tasks:
                active = task in phase["tasks"]
                if active:
                    metrics[f"weight/{task}"] = 1.0 + 0.1 * math.sin(epoch + len(task))
                    metrics[f"train/loss/{task}"] = 1.0 / epoch
                metrics[f"forgetting/{task}"] = 0.0 if active else forget * epoch
            return _common(epoch, number, phase, targets, metrics)

        return row

    joint = [
        ("joint_best", 1e-3, 6, "loss_ratio", (0.62, 0.8, 0.7), ()),
        ("joint_b", 3e-4, 4, "equal", (0.55, 0.7, 0.5), ()),
        ("joint_c", 1e-4, 3, "uncertainty", (0.3, 0.9, 0.3), ()),
        ("joint_noseg", 2e-3, 5, "loss_ratio", (0.0, 0.6, 0.65), ("val/seg_miou",)),
    ]
    for trial_id, lr, epochs, weighting, level, skip in joint:
        phases = [
            _phase("warmup", 1, tasks, lr),
            _phase("joint", epochs, tasks, lr, weighting=weighting),
            _phase("finetune", 1, tasks, lr / 10),
        ]
        params = {"lr": lr, "joint_epochs": epochs, "weighting": weighting, "batch_size": 32}
        _write_trial(root, trial_id, "joint", params, phases, curve(level, skip=skip))
    sequence = [_phase(f"task/{task}", 2, [task], 1e-3) for task in tasks]
    params = {"order": "seg,det,cls", "task_epochs": 20, "use_ewc": False, "lr": 1e-3}
    _write_trial(root, "seq0", "sequential", params, sequence, curve((0.4, 0.3, 0.8), forget=0.1))
    _write_trial(
        root,
        "seq_short",
        "sequential",
        {**params, "lr": 3e-3},
        [_phase("task/seg", 1, ["seg"], 3e-3)],
        curve((0.2, 0.1, 0.1)),
        complete=False,
    )


@pytest.fixture(scope="module")
def signs(tmp_path_factory) -> Path:
    """The single-task experiment, reported through the command line."""
    root = tmp_path_factory.mktemp("signs")
    _signs(root, slope={"prog0": 0.2, "prog1": 0.15, "prog2": 0.12, "prog3": 0.08})
    result = CliRunner().invoke(app, ["report", str(root), "--top", "6"])
    assert result.exit_code == 0, result.output
    assert str(root / "report" / "report.md") in result.output
    return root


def _write(root: Path) -> ReportFiles:
    """The report as `phasetune report` writes it, from the experiment's own file."""
    config = load_experiment(root / "experiment.yaml")
    return write_report(
        root,
        name=config.name,
        targets=config.target_list(),
        spaces=config.strategy_spaces(),
        num_groups=config.model.num_groups,
    )


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> tuple[Path, ReportFiles]:
    root = tmp_path_factory.mktemp("scenes")
    _scenes(root)
    return root, _write(root)


def _section(markdown: str, title: str) -> str:
    return markdown.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def _ranking_ids(markdown: str) -> list[str]:
    rows = [line for line in _section(markdown, "Ranking").splitlines() if line.startswith("| ")]
    return [re.search(r"`([^`]+)`", row).group(1) for row in rows if "`" in row]


def _check_figures(report_dir: Path, images: list[Path]) -> None:
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    markdown = (report_dir / "report.md").read_text(encoding="utf-8")
    assert sorted(report_dir.glob("*.png")) == sorted(images)
    assert page.count("data:image/png;base64,") == len(images)
    for image in images:
        data = image.read_bytes()
        assert base64.b64encode(data).decode() in page
        assert f"]({image.name})" in markdown
        assert len(data) > 8_000, image.name
        with Image.open(image) as opened:
            width, height = opened.size
            assert width <= 800 and height <= 500, image.name
            pixels = np.asarray(opened.convert("RGB")).reshape(-1, 3).astype(np.int32)
        colours = np.unique(pixels[:, 0] << 16 | pixels[:, 1] << 8 | pixels[:, 2])
        assert len(colours) > 2, image.name


def test_single_task_report_has_every_figure_embedded(signs):
    images = sorted((signs / "report").glob("*.png"))
    names = {image.name for image in images}
    assert {"curves_progressive.png", "curves_single_phase.png", "lr_groups.png"} <= names
    assert {"importance_progressive.png", "score_vs_params_progressive.png"} <= names
    # One task: no Pareto front, task weights or forgetting to show.
    assert not names & {"pareto.png", "task_weights.png", "forgetting.png"}
    _check_figures(signs / "report", images)


def test_single_task_ranking_and_claims(signs):
    markdown = (signs / "report" / "report.md").read_text(encoding="utf-8")
    tables = load_results(str(signs))
    records = trial_records(tables.trials)
    ranked = rank_trials(records, TARGET_SETS["nsl"].targets)
    assert ranked[0].record.trial_id == "prog0"
    assert "**Which strategy: `progressive`.**" in markdown
    assert _ranking_ids(markdown) == [item.record.trial_id for item in ranked[:6]]
    assert "Pareto" not in _section(markdown, "Ranking")
    claims = _section(markdown, "Claims of the source documents")
    for verdict in check_claims(records, tables.epochs):
        assert f"**{verdict.claim.id}**" in claims
    # A pipe inside a quoted source must not split its Markdown table cell.
    assert "\\| **Final Accuracy** \\|" in markdown


def test_multi_task_report_marks_the_pareto_front(scenes):
    root, files = scenes
    assert files.markdown == root / "report" / "report.md" and files.html.is_file()
    names = {image.name for image in files.images}
    assert {"pareto.png", "task_weights.png", "forgetting.png", "lr_groups.png"} <= names
    assert {"curves_joint.png", "curves_sequential.png"} <= names
    _check_figures(root / "report", files.images)
    markdown = files.markdown.read_text(encoding="utf-8")
    ids = _ranking_ids(markdown)
    assert ids[0] == "joint_best"
    rows = {
        re.search(r"`([^`]+)`", line).group(1): line
        for line in _section(markdown, "Ranking").splitlines()[1:]
        if line.startswith("| ") and "`" in line
    }
    # joint_c trades segmentation for the best detection: on the front, not the top.
    assert rows["joint_best"].rstrip(" |").endswith("★")
    assert rows["joint_c"].rstrip(" |").endswith("★")
    assert not rows["joint_b"].rstrip(" |").endswith("★")
    tables = load_results(str(root))
    for verdict in check_claims(trial_records(tables.trials), tables.epochs):
        assert f"**{verdict.claim.id}**" in _section(markdown, "Claims of the source documents")


def test_report_on_a_directory_without_an_experiment_is_a_user_error(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "not an experiment directory" in result.output
    assert not (tmp_path / "report").exists()
