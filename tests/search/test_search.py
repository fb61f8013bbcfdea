"""The search end to end on tiny data: trials run, ranking and export, retraining."""

from __future__ import annotations

import json
import re
from unittest import mock

import pytest
import yaml
from typer.testing import CliRunner

from analysis.export import load_best
from search.cli import app
from search.config import ExperimentConfig
from search.experiment import run_search

TINY_EXPERIMENT = {
    "name": "tiny",
    "dataset": {"num_samples": 360, "image_size": 16, "num_classes": 6},
    "model": {"width": 4, "pretrain": {"num_samples": 400, "epochs": 1}},
    "strategies": {
        "progressive": {"space": {"frozen_epochs": [1, 2], "partial_epochs": 1, "full_epochs": 1}},
        "single_phase": {"space": {"epochs": [20, 30]}},
    },
    # 0.1 turns the documents' baselines (3+3+4 and 40 epochs) into 1+1+1 and 4.
    "search": {"num_samples": 3, "epoch_scale": 0.1, "seed": 0, "scheduler": "fifo"},
}


@pytest.fixture(scope="module")
def searched(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    config = ExperimentConfig.model_validate({**TINY_EXPERIMENT, "storage": {"path": str(root)}})
    return config, run_search(config)


def test_search_runs_every_trial_baselines_first(searched):
    config, outcome = searched
    assert len(outcome.ranked) == 3
    strategies = {item.record.strategy for item in outcome.ranked}
    assert strategies == {"progressive", "single_phase"}  # both baselines ran
    for item in outcome.ranked:
        assert item.record.status in ("done", "early_stopped")
        assert item.record.epochs >= 1
        assert 0.0 <= item.record.metrics["val/acc"] <= 1.0
    baseline = next(i for i in outcome.ranked if i.record.params.get("base_lr") == 1e-3)
    assert [p["epochs"] for p in baseline.record.plan["phases"]] == [1, 1, 1]


def test_ranking_is_ordered_and_written(searched):
    _, outcome = searched
    keys = [(-i.targets_met, -i.target_score, i.record.epochs) for i in outcome.ranked]
    assert keys == sorted(keys)
    rows = json.loads((outcome.experiment_dir / "ranking.json").read_text())
    assert [row["trial_id"] for row in rows] == [i.record.trial_id for i in outcome.ranked]


def test_best_config_files_parse_and_describe_the_best_trial(searched):
    _, outcome = searched
    best = outcome.ranked[0]
    from_yaml = yaml.safe_load(outcome.best_yaml.read_text())
    from_json = json.loads(outcome.best_json.read_text())
    assert from_yaml == from_json
    assert from_yaml["trial_id"] == best.record.trial_id
    assert from_yaml["strategy"] == best.record.strategy
    assert from_yaml["metrics"]["val/acc"] == pytest.approx(best.record.metrics["val/acc"])
    assert from_yaml["targets"][0]["metric"] == "val/acc"
    assert from_yaml["targets"][0]["threshold"] == 0.85
    assert from_yaml["seed"] == 0
    assert from_yaml["epoch_scale"] == 0.1
    assert {"torch", "ray", "optuna", "python"} <= set(from_yaml["provenance"]["versions"])
    # What the trial trained on, so that `phasetune train` can match it.
    assert from_yaml["resources"] == {
        "workers_per_trial": 1,
        "cpus_per_worker": 1.0,
        "gpus_per_worker": 0.0,
        "torch_threads": 1,
    }
    assert load_best(outcome.best_yaml).resources == from_yaml["resources"]
    phases = from_yaml["phases"]
    assert sum(p["epochs"] for p in phases) == load_best(outcome.best_yaml).plan.total_epochs


def test_experiment_dir_holds_study_tensorboard_and_config(searched):
    config, outcome = searched
    directory = outcome.experiment_dir
    assert (directory / "study.db").exists()
    assert (directory / "experiment.yaml").exists()
    runs = list((directory / "tensorboard").iterdir())
    assert len(runs) == 3
    assert all(any(f.name.startswith("events.out.tfevents") for f in run.iterdir()) for run in runs)
    import optuna

    study = optuna.load_study(study_name=config.name, storage=f"sqlite:///{directory / 'study.db'}")
    assert len(study.trials) == 3
    assert study.trials[0].params["strategy"] in ("progressive", "single_phase")


def test_retrain_from_best_yaml_alone_reproduces_the_searched_metrics(searched, tmp_path):
    import torch

    _, outcome = searched
    out = tmp_path / "retrained"
    # No --threads: the file's own count (the trial's 1 CPU), not torch's default.
    args = ["train", str(outcome.best_yaml), "--output", str(out)]
    with mock.patch.object(torch, "set_num_threads", wraps=torch.set_num_threads) as threads:
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    threads.assert_called_once_with(1)
    assert "torch threads: 1, as in the search's trial" in result.output
    assert "Searched vs retrained" in result.output
    # Counts print as counts on both sides.
    epochs = load_best(outcome.best_yaml)["metrics"]["epoch"]
    assert re.search(rf"epoch\s+\S\s+{int(epochs)}\s+\S\s+{int(epochs)}\s", result.output)
    assert (out / "model.pt").exists()
    report = json.loads((out / "retrain.json").read_text())
    searched, retrained = report["searched"], report["retrained"]
    # Same plan, seed, data and thread count as the trial: the same numbers.
    assert retrained["epoch"] == searched["epoch"]
    assert retrained["val/acc"] == pytest.approx(searched["val/acc"], abs=1e-6)
    assert retrained["val/loss"] == pytest.approx(searched["val/loss"], rel=1e-4)


def test_existing_experiment_is_refused_without_overwrite(searched):
    config, outcome = searched
    before = sorted(p.name for p in outcome.experiment_dir.iterdir())
    from search.config import ConfigError

    with pytest.raises(ConfigError, match="already exists"):
        run_search(config)
    assert sorted(p.name for p in outcome.experiment_dir.iterdir()) == before


def test_results_parquet_reads_back_with_pyarrow_alone(searched):
    import pyarrow.parquet as pq

    _, outcome = searched
    trials = pq.read_table(outcome.experiment_dir / "results.parquet")
    epochs = pq.read_table(outcome.experiment_dir / "epochs.parquet")
    assert trials.num_rows == 3
    rows = {row["trial_id"]: row for row in trials.to_pylist()}
    for item in outcome.ranked:
        row = rows[item.record.trial_id]
        assert row["strategy"] == item.record.strategy
        assert row["status"] == item.record.status
        assert row["epochs"] == item.record.epochs
        assert row["final/val/acc"] == pytest.approx(item.record.metrics["val/acc"])
        assert row["plan/epochs"] == [p["epochs"] for p in item.record.plan["phases"]]
        assert 1 <= row["best_epoch/val/acc"] <= row["epochs"]
    assert epochs.num_rows == sum(i.record.epochs for i in outcome.ranked)
    assert {"trial_id", "epoch", "phase", "val/acc", "lr/group0"} <= set(epochs.column_names)
    assert str(trials.schema.field("param/progressive/base_lr").type) == "double"


def test_study_holds_every_finished_trial_as_complete(searched):
    import optuna
    from optuna.trial import TrialState

    config, outcome = searched
    study = optuna.load_study(
        study_name=config.name, storage=f"sqlite:///{outcome.experiment_dir / 'study.db'}"
    )
    by_score = sorted(t.value for t in study.trials if t.state == TrialState.COMPLETE)
    assert len(by_score) == 3
    assert by_score == pytest.approx(sorted(i.target_score for i in outcome.ranked))


def test_analyze_status_and_export_read_the_experiment_directory(searched, tmp_path):
    _, outcome = searched
    directory = str(outcome.experiment_dir)
    runner = CliRunner()
    status = runner.invoke(app, ["status", directory])
    assert status.exit_code == 0, status.output
    assert "tiny: 3 of 3 trials" in status.output
    analyzed = runner.invoke(app, ["analyze", directory, "--top", "2"])
    assert analyzed.exit_code == 0, analyzed.output
    assert outcome.ranked[0].record.trial_id in analyzed.output
    assert outcome.ranked[2].record.trial_id not in analyzed.output
    second = outcome.ranked[1].record.trial_id
    exported = runner.invoke(app, ["export", directory, "--rank", "2", "--output", str(tmp_path)])
    assert exported.exit_code == 0, exported.output
    exported_yaml = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert exported_yaml["trial_id"] == second
    assert exported_yaml["resources"]["torch_threads"] == 1
    missing = runner.invoke(app, ["export", directory, "--trial", "nope"])
    assert missing.exit_code == 2 and "no trial 'nope'" in missing.output


def test_analyze_re_ranks_with_other_targets(searched, tmp_path):
    _, outcome = searched
    targets = tmp_path / "targets.yaml"
    targets.write_text("- {metric: val/loss, threshold: 0.01, direction: min, source: test}\n")
    result = CliRunner().invoke(
        app,
        [
            "export",
            str(outcome.experiment_dir),
            "--targets",
            str(targets),
            "--output",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    lowest_loss = min(outcome.ranked, key=lambda i: i.record.metrics["val/loss"]).record.trial_id
    exported = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert exported["trial_id"] == lowest_loss
    assert exported["targets"][0]["metric"] == "val/loss"


def test_a_diverging_trial_fails_in_tune_and_optuna_while_others_finish(
    ray_session, tmp_path_factory
):
    import optuna
    from optuna.trial import TrialState

    root = tmp_path_factory.mktemp("diverging")
    experiment = {
        **TINY_EXPERIMENT,
        "name": "diverging",
        # The documented baseline (lr 1e-3) runs first; every sampled trial then
        # trains at lr >= 1e29 and its loss becomes NaN. (A range, not a fixed
        # value: a fixed parameter applies to the baselines too.)
        "strategies": {
            "progressive": {
                "space": {
                    "frozen_epochs": 1,
                    "partial_epochs": 1,
                    "full_epochs": 1,
                    "base_lr": [1e29, 1e30],
                }
            }
        },
        "search": {"num_samples": 2, "epoch_scale": 0.1, "scheduler": "fifo"},
        "storage": {"path": str(root)},
    }
    outcome = run_search(ExperimentConfig.model_validate(experiment))
    first, last = outcome.ranked
    assert first.record.status == "done" and first.record.params["base_lr"] == 1e-3
    assert last.record.status == "failed"
    assert "diverged" in last.record.error
    assert outcome.best_yaml is not None
    study = optuna.load_study(
        study_name="diverging", storage=f"sqlite:///{outcome.experiment_dir / 'study.db'}"
    )
    states = sorted(t.state.name for t in study.trials)
    assert states == [TrialState.COMPLETE.name, TrialState.FAIL.name]
    failed = next(t for t in study.trials if t.state == TrialState.FAIL)
    assert "error" in failed.user_attrs["fail_reason"]


def test_tensorboard_serves_our_scalars_and_hparams_on_loopback(searched):
    import subprocess
    import time
    import urllib.request

    from analysis.tensorboard import free_port, tensorboard_command

    _, outcome = searched
    port = free_port()
    server = subprocess.Popen(
        tensorboard_command(outcome.experiment_dir, port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def get(path: str, body: bytes | None = None) -> dict:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body)
        if body is not None:
            request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    try:
        deadline = time.monotonic() + 60
        tags: dict = {}
        while time.monotonic() < deadline:
            try:
                tags = get("/data/plugin/scalars/tags")
                if len(tags) == 3:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert set(tags) == {item.record.trial_id for item in outcome.ranked}
        for run_tags in tags.values():
            assert {"val/acc", "val/loss", "train/loss/cls", "lr/group0", "phase"} <= set(run_tags)
        plugins = get("/data/plugins_listing")
        assert plugins["scalars"]["enabled"] and plugins["hparams"]["enabled"]
        experiment = get("/data/plugin/hparams/experiment", b'{"experimentName": ""}')
        names = {info["name"] for info in experiment["hparamInfos"]}
        # Every strategy's parameters, not just those of whichever trial was read first.
        assert {"strategy", "progressive/base_lr", "single_phase/lr"} <= names
    finally:
        server.terminate()
        server.wait(timeout=10)
