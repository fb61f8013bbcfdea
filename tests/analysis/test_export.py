"""Best-config files on their own: what export_best writes and load_best reads back."""

from __future__ import annotations

import json
import math
import platform
import subprocess
from importlib import metadata

import numpy as np
import pytest

from analysis import export
from analysis.export import FORMAT, BestConfig, expand_plan, export_best, load_best, versions
from analysis.ranking import TrialRecord, rank_trials
from analysis.targets import Target
from tests.conftest import TINY_CONTEXT, TINY_PROGRESSIVE
from trainables.phases import PhasePlan, PlanError
from trainables.strategies import build_plan

TARGETS = (
    Target("val/acc", 0.5, source="the document"),
    Target("val/loss", 1.0, direction="min", assumed=True),
)
PLAN = build_plan("progressive", TINY_PROGRESSIVE, TINY_CONTEXT)
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _ranked(metrics=None, params=None, plan=PLAN):
    record = TrialRecord(
        trial_id="trial_7",
        strategy="progressive",
        params=params if params is not None else dict(TINY_PROGRESSIVE),
        metrics=metrics if metrics is not None else {"val/acc": 0.6, "val/loss": 0.8, "epoch": 3},
        status="done",
        plan=plan.to_dict() if plan is not None else None,
    )
    (ranked,) = rank_trials([record], TARGETS)
    return ranked


@pytest.fixture(autouse=True)
def _no_git(monkeypatch):
    """The commit is asked of git in a subprocess; here it is a fixed one."""
    monkeypatch.setattr(export, "_git_commit", lambda: COMMIT)


def _export(tmp_path, ranked=None, **kwargs):
    kwargs.setdefault("experiment", "tiny")
    kwargs.setdefault("experiment_dir", "/results/tiny")
    return export_best(ranked or _ranked(), TARGETS, tmp_path / "out", **kwargs)


def test_yaml_and_json_hold_the_same_document_and_load_back(tmp_path):
    yaml_path, json_path = _export(tmp_path, epoch_scale=0.5)
    assert (yaml_path.name, json_path.name) == ("best.yaml", "best.json")
    from_yaml, from_json = load_best(yaml_path), load_best(json_path)
    assert isinstance(from_yaml, BestConfig) and from_yaml == from_json
    text = yaml_path.read_text()
    assert text.startswith("# Best configuration of experiment 'tiny' (trial trial_7).\n")
    assert f"# Train it again with: phasetune train {yaml_path}\n" in text
    assert sorted(p.name for p in yaml_path.parent.iterdir()) == ["best.json", "best.yaml"]
    document = from_yaml
    assert document["format"] == FORMAT
    assert (document["experiment"], document["experiment_dir"]) == ("tiny", "/results/tiny")
    assert (document["trial_id"], document["rank"], document["status"]) == ("trial_7", 1, "done")
    assert document["strategy"] == "progressive" and document["params"] == TINY_PROGRESSIVE
    assert document["epoch_scale"] == 0.5 and document["seed"] == PLAN.seed
    assert document["provenance"]["git_commit"] == COMMIT
    assert document["provenance"]["versions"] == versions()


def test_the_plan_and_targets_come_back_as_they_were(tmp_path):
    yaml_path, _ = _export(tmp_path)
    best = load_best(yaml_path)
    assert best.plan == PLAN
    assert best.targets == TARGETS
    assert [(v["metric"], v["value"], v["met"]) for v in best["targets"]] == [
        ("val/acc", 0.6, True),
        ("val/loss", 0.8, True),
    ]
    assert best["targets_met"] == 2
    assert best["target_score"] == pytest.approx(_ranked().target_score)


def test_only_numeric_metrics_are_kept_and_nan_survives_both_formats(tmp_path):
    metrics = {"val/acc": math.nan, "val/loss": 2.0, "epoch": 3, "phase_name": "full"}
    yaml_path, json_path = _export(tmp_path, _ranked(metrics=metrics))
    for path in (yaml_path, json_path):
        kept = load_best(path)["metrics"]
        assert set(kept) == {"val/acc", "val/loss", "epoch"}
        assert math.isnan(kept["val/acc"]) and kept["val/loss"] == 2.0 and kept["epoch"] == 3
    assert load_best(yaml_path)["targets_met"] == 0


def test_numpy_values_are_written_as_plain_numbers(tmp_path):
    params = {**TINY_PROGRESSIVE, "base_lr": np.float64(3e-3), "batch_size": np.int64(32)}
    yaml_path, json_path = _export(tmp_path, _ranked(params=params))
    assert "!!" not in yaml_path.read_text()  # no tagged Python objects
    for path in (yaml_path, json_path):
        loaded = load_best(path)["params"]
        assert loaded["base_lr"] == 3e-3 and type(loaded["base_lr"]) is float
        assert loaded["batch_size"] == 32 and type(loaded["batch_size"]) is int


def test_resources_and_definition_are_written_only_when_given(tmp_path):
    best = load_best(_export(tmp_path)[0])
    assert "resources" not in best and best.resources is None and "definition" not in best
    resources = {"workers": 2, "cpus_per_worker": 1, "gpus_per_worker": 0.5, "threads": 4}
    definition = {"phases": [{"name": "all", "epochs": "{epochs}"}]}
    best = load_best(_export(tmp_path, resources=resources, definition=definition)[1])
    assert best.resources == resources and best["definition"] == definition


def test_exporting_again_replaces_the_files_whole(tmp_path):
    _export(tmp_path, experiment="first")
    yaml_path, json_path = _export(tmp_path, experiment="second")
    assert load_best(yaml_path)["experiment"] == "second"
    assert json.loads(json_path.read_text())["experiment"] == "second"
    assert sorted(p.name for p in yaml_path.parent.iterdir()) == ["best.json", "best.yaml"]


def test_a_trial_without_a_plan_is_refused_by_id(tmp_path):
    with pytest.raises(ValueError, match="trial trial_7 has no plan to export"):
        _export(tmp_path, _ranked(plan=None))
    assert not (tmp_path / "out").exists()


# -- reading -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        "format: something/else\nplan: {}\n",
        "- a list\n- not a mapping\n",
        "just text\n",
    ],
    ids=["other-format", "list", "scalar"],
)
def test_a_file_that_is_not_a_best_config_is_refused_by_path(tmp_path, content):
    path = tmp_path / "best.yaml"
    path.write_text(content)
    with pytest.raises(ValueError) as error:
        load_best(path)
    assert str(error.value) == f"{path}: not a phasetune best-config file (format {FORMAT})"


def test_a_best_config_whose_plan_cannot_run_is_refused_naming_the_field(tmp_path):
    _, json_path = _export(tmp_path)
    document = json.loads(json_path.read_text())
    document["plan"]["phases"][1]["lr"] = 0.0
    json_path.write_text(json.dumps(document))
    with pytest.raises(PlanError, match=r"phases\[1\] \(partial\)\.lr: must be > 0, got 0.0"):
        load_best(json_path)


def test_a_best_config_without_a_readable_plan_is_refused_in_one_line(tmp_path):
    _, json_path = _export(tmp_path)
    document = json.loads(json_path.read_text())
    del document["plan"]
    json_path.write_text(json.dumps(document))
    with pytest.raises(ValueError) as error:
        load_best(json_path)
    assert str(error.value) == f"{json_path}: it has no plan; export the best trial again"
    document["plan"] = {"phases": [{"name": "p", "no_such_field": 1}]}
    json_path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match="its plan cannot be read .*; export the best trial"):
        load_best(json_path)


# -- pieces ------------------------------------------------------------------------------


def test_expand_plan_lists_trained_and_frozen_groups_per_phase():
    rows = expand_plan(PLAN)
    assert [r["name"] for r in rows] == ["frozen", "partial", "full"]
    assert [r["trainable_groups"] for r in rows] == [[], [4, 5], [0, 1, 2, 3, 4, 5]]
    assert [r["frozen_groups"] for r in rows] == [[0, 1, 2, 3, 4, 5], [0, 1, 2, 3], []]
    assert [r["epochs"] for r in rows] == [1, 1, 1]
    assert [r["lr"] for r in rows] == pytest.approx([3e-3, 3e-4, 3e-5])
    assert all(r["tasks"] == ["cls"] and r["early_stopping_patience"] is None for r in rows)
    assert all(r["lr_schedule"] == "constant" for r in rows)


def test_expand_plan_shows_early_stopping_and_the_schedule():
    params = {
        "epochs": 4,
        "lr": 1e-4,
        "plateau_factor": 0.2,
        "plateau_patience": 1,
        "early_stopping_patience": 2,
        "batch_size": 32,
        "dropout": 0.1,
    }
    (row,) = expand_plan(build_plan("single_phase", params, TINY_CONTEXT))
    assert row["early_stopping_patience"] == 2 and row["lr_schedule"] == "plateau"
    assert row["trainable"] == "all" and row["frozen_groups"] == []


def test_versions_name_python_and_the_libraries():
    found = versions()
    assert set(found) == {"python", "phasetune", "torch", "ray", "optuna"}
    assert found["python"] == platform.python_version()
    assert found["torch"] == metadata.version("torch")


def test_versions_say_when_a_library_is_not_installed(monkeypatch):
    real = metadata.version

    def version(name):
        if name == "ray":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(export.metadata, "version", version)
    assert versions()["ray"] == "not installed"


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (subprocess.CompletedProcess([], 0, stdout=f"{COMMIT}\n"), COMMIT),
        (subprocess.CompletedProcess([], 128, stdout=""), None),
        (subprocess.CompletedProcess([], 0, stdout=""), None),
        (OSError("no git"), None),
        (subprocess.TimeoutExpired("git", 5), None),
    ],
    ids=["commit", "not-a-repo", "empty", "no-git", "timeout"],
)
def test_the_git_commit_is_none_whenever_git_cannot_say(monkeypatch, outcome, expected):
    monkeypatch.undo()  # the real _git_commit, with git itself stood in for

    def run(*args, **kwargs):
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    monkeypatch.setattr(export.subprocess, "run", run)
    assert export._git_commit() == expected


def test_best_config_reads_plan_resources_and_targets_from_a_plain_document():
    document = BestConfig(
        {
            "plan": PLAN.to_dict(),
            "targets": [{"metric": "val/acc", "threshold": 0.5, "direction": "max"}],
        }
    )
    assert isinstance(document.plan, PhasePlan) and document.plan == PLAN
    # Older files: no source or assumed flag, no resources.
    assert document.targets == (Target("val/acc", 0.5, "max", source="", assumed=False),)
    assert document.resources is None
