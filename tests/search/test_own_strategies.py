"""A strategy of the experiment's own: validated before Ray, searched, ranked, exported,
trained again and resumed like the built-ins."""

from __future__ import annotations

import copy
import dataclasses
import json

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from analysis.claims import NOT_TESTED, check_claims
from analysis.export import load_best
from search.cli import app
from search.config import ExperimentConfig, load_experiment
from trainables.strategies import build_plan

TINY = {
    "dataset": {"num_samples": 360, "image_size": 16, "num_classes": 6},
    "model": {"width": 4, "pretrain": {"num_samples": 400, "epochs": 1}},
}
FINE_TUNE = {
    "phases": [
        {"name": "frozen", "epochs": "{freeze_epochs}", "trainable": "none", "lr": "{base_lr}"},
        {
            "name": "unfrozen",
            "epochs": "{epochs}",
            "trainable": "all",
            "lr": "{base_lr} / 2",
            "layer_lr_decay": "1 / {lr_mult} ** 0.2",
            "lr_schedule": {"kind": "one_cycle", "pct_start": 0.3},
        },
    ],
    "space": {
        "freeze_epochs": {"low": 1, "high": 1},
        "base_lr": {"low": 1.0e-3, "high": 1.0e-2, "log": True},
        "epochs": {"low": 1, "high": 2},
        "lr_mult": {"choices": [10, 100]},
    },
    "baselines": [{"freeze_epochs": 1, "base_lr": 3.0e-3, "epochs": 2, "lr_mult": 100}],
}
GRADUAL = {
    "phases": [
        {"name": "head", "epochs": 1, "trainable": "none", "lr": "{lr}"},
        {
            "repeat": "{steps}",
            "as": "i",
            "phase": {
                "name": "unfreeze {i}",
                "epochs": 1,
                "trainable": "{i}",
                "lr": "{lr} / {decay} ** {i}",
            },
        },
        {"name": "all", "epochs": 1, "trainable": "all", "lr": "{lr} / {decay} ** ({steps} + 1)"},
    ],
    "space": {"lr": [1.0e-3, 1.0e-2], "steps": [1, 2], "decay": [1.5, 4.0]},
    "baselines": [{"lr": 3.0e-3, "steps": 2, "decay": 2.0}],
}
EXPERIMENT = {
    "name": "own",
    **TINY,
    "strategies": {
        "progressive": {"space": {"frozen_epochs": 1, "partial_epochs": 1, "full_epochs": 1}},
        "fine_tune": FINE_TUNE,
        "gradual_unfreeze": GRADUAL,
    },
    "search": {"num_samples": 4, "seed": 0, "scheduler": "strategy_asha", "grace_period": 1},
}


def _write(tmp_path, experiment):
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump({**experiment, "storage": {"path": str(tmp_path / "r")}}))
    return path


def _fine_tune(change):
    experiment = copy.deepcopy(EXPERIMENT)
    change(experiment["strategies"]["fine_tune"], experiment["strategies"])
    return experiment


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda s, _: s["phases"][0].update(lr_shedule={"kind": "cosine"}),
            "strategies.fine_tune.phases[0].lr_shedule: unknown field",
        ),
        (
            lambda s, _: s["phases"][0].update(lr="{baselr}"),
            "strategies.fine_tune.phases[0].lr: uses {baselr}, which the space lacks",
        ),
        (
            lambda s, _: s["space"].update(unused=[1, 2]),
            "strategies.fine_tune.space.unused: no phase uses it",
        ),
        (
            lambda s, all_: all_.update(joint=all_.pop("fine_tune")),
            "strategies.joint: joint is a built-in strategy",
        ),
        (
            lambda s, _: s["phases"][1].update(epochs="{epochs} / 2"),
            "phases[1].epochs: must come out a whole number, got 0.5",
        ),
        (
            lambda s, _: s["phases"][1].update(trainable="{lr_mult}"),
            "phases[1] (unfrozen).trainable: the backbone has 6 layer groups",
        ),
        (
            lambda s, _: s["space"].update(base_lr={"low": 0.0, "high": 1e-2}),
            "phases[0] (frozen).lr: must be > 0, got 0.0",
        ),
        (
            lambda s, _: s["phases"][0].update(lr="{base_lr}.__class__"),
            "strategies.fine_tune.phases[0].lr: '{base_lr}.__class__': attribute access",
        ),
        (
            lambda s, _: s["phases"][0].update(lr="__import__('os').getcwd()"),
            "'__import__' is not allowed",
        ),
        (
            lambda s, _: s["phases"][0].update(lr="abs({base_lr})"),
            "'abs' is not allowed",
        ),
        (
            lambda s, _: s.update(plan_factory="no_such_module:build"),
            "strategies.fine_tune.plan_factory: give either phases or a plan_factory",
        ),
        (
            lambda s, _: s["baselines"][0].update(epochs=9),
            "strategies.fine_tune.baselines[0].epochs: 9 is outside the space",
        ),
        (
            lambda s, all_: all_.update(mine={"space": {}}),
            "strategies.mine: unknown strategy; use one of progressive",
        ),
        (
            lambda s, all_: all_["progressive"].update(baselines=[{"base_lr": 1e-3}]),
            "strategies.progressive.baselines: a built-in takes only space",
        ),
    ],
)
def test_a_strategy_that_cannot_run_stops_before_ray_in_one_line(tmp_path, change, message):
    path = _write(tmp_path, _fine_tune(change))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert not (tmp_path / "r").exists()  # nothing written


@pytest.mark.parametrize("strategy", ["progressive", "single_phase"])
def test_strategy_show_prints_a_builtin_that_runs_as_written(tmp_path, strategy):
    path = _write(tmp_path, {"name": "x", **TINY})
    result = CliRunner().invoke(app, ["strategy", "show", strategy, str(path)])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)["strategies"]
    assert list(shown) == [f"my_{strategy}"]
    # Pasted into an experiment as printed, it searches the built-in's plans.
    config = ExperimentConfig.model_validate({**TINY, "strategies": shown})
    context = config.plan_context()
    space = config.search_space()
    (own,) = space.strategies
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for point in space.points_to_evaluate():
        study.enqueue_trial(point)
    for _ in range(40):
        trial = study.ask()
        fixed = space.define_by_run(trial)
        params = {k.split("/", 1)[1]: v for k, v in {**trial.params, **fixed}.items() if "/" in k}
        written = build_plan(own.strategy, params, context)
        assert dataclasses.replace(written, strategy=strategy) == build_plan(
            strategy, params, context
        )
        study.tell(trial, 0.0)


def test_strategy_show_prints_your_own_and_its_first_plan(tmp_path):
    path = _write(tmp_path, EXPERIMENT)
    result = CliRunner().invoke(app, ["strategy", "show", "gradual_unfreeze", str(path)])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.output)["strategies"]["gradual_unfreeze"] == GRADUAL
    assert "#   unfreeze 2: 1 ep, train 2, lr 0.00075 constant" in result.output


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("joint", "joint: is written in Python"),
        ("nope", "nope: no such strategy; use one of progressive"),
    ],
)
def test_strategy_show_refuses_what_it_cannot_write_in_one_line(name, message):
    result = CliRunner().invoke(app, ["strategy", "show", name])
    assert result.exit_code == 2
    assert message in result.output


@pytest.fixture(scope="module")
def searched(ray_session, tmp_path_factory):
    from search.experiment import run_search

    root = tmp_path_factory.mktemp("results")
    config = ExperimentConfig.model_validate({**EXPERIMENT, "storage": {"path": str(root)}})
    return config, run_search(config)


@pytest.mark.slow
def test_own_strategies_are_searched_ranked_and_reported_like_the_builtins(searched):
    config, outcome = searched
    by_strategy = {item.record.strategy: item for item in outcome.ranked}
    assert {"progressive", "fine_tune", "gradual_unfreeze"} <= set(by_strategy)
    assert all(item.record.status in ("done", "early_stopped") for item in outcome.ranked)
    gradual = by_strategy["gradual_unfreeze"].record
    assert [p["name"] for p in gradual.plan["phases"]][:2] == ["head", "unfreeze 1"]
    directory = outcome.experiment_dir
    import pyarrow.parquet as pq

    columns = pq.read_table(directory / "results.parquet").column_names
    own = {"param/fine_tune/base_lr", "param/fine_tune/lr_mult", "param/gradual_unfreeze/steps"}
    assert own <= set(columns)
    curves = pq.read_table(directory / "epochs.parquet").to_pylist()
    fine_tune = [
        row for row in curves if row["trial_id"] == by_strategy["fine_tune"].record.trial_id
    ]
    assert [row["phase"] for row in fine_tune][:2] == [1, 2]
    # TensorBoard: the lr of every layer group, as for a built-in's trial.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = directory / "tensorboard" / by_strategy["fine_tune"].record.trial_id
    events = EventAccumulator(str(runs)).Reload()
    assert {"phase", "lr/group0", "lr/group5"} <= set(events.Tags()["scalars"])
    # The analysis: a summary line, a claims line saying why it is not tested, a report.
    result = CliRunner().invoke(app, ["analyze", str(directory)])
    assert result.exit_code == 0, result.output
    assert "gradual_unfreeze" in result.output
    verdicts = {v.claim.id: v for v in check_claims([i.record for i in outcome.ranked])}
    assert verdicts["own:fine_tune"].verdict == NOT_TESTED
    assert "make no claim about fine_tune" in verdicts["own:fine_tune"].detail
    result = CliRunner().invoke(app, ["report", str(directory)])
    assert result.exit_code == 0, result.output
    report = (directory / "report" / "report.md").read_text()
    assert "`fine_tune`" in report and "own:gradual_unfreeze" in report


@pytest.mark.slow
def test_an_own_strategys_best_config_holds_its_definition_and_trains_again(searched, tmp_path):
    _, outcome = searched
    trial = next(i for i in outcome.ranked if i.record.strategy == "gradual_unfreeze").record
    out = tmp_path / "exported"
    result = CliRunner().invoke(
        app,
        ["export", str(outcome.experiment_dir), "--trial", trial.trial_id, "--output", str(out)],
    )
    assert result.exit_code == 0, result.output
    best = load_best(out / "best.yaml")
    assert best["definition"] == GRADUAL
    assert best["plan"] == trial.plan  # the expanded plan, which training reads
    result = CliRunner().invoke(
        app, ["train", str(out / "best.yaml"), "--output", str(tmp_path / "t")]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "t" / "retrain.json").read_text())
    assert report["retrained"]["epoch"] == report["searched"]["epoch"]
    assert report["retrained"]["val/acc"] == pytest.approx(report["searched"]["val/acc"], abs=1e-6)
    assert report["retrained"]["val/loss"] == pytest.approx(
        report["searched"]["val/loss"], rel=1e-4
    )


@pytest.mark.slow
def test_a_search_with_own_strategies_resumes_from_its_saved_file(searched):
    from search.experiment import resume_search

    _, outcome = searched
    saved = load_experiment(outcome.experiment_dir / "experiment.yaml")
    assert saved.strategies["fine_tune"].definition() == FINE_TUNE
    resumed = resume_search(outcome.experiment_dir)
    assert sorted(i.record.trial_id for i in resumed.ranked) == sorted(
        i.record.trial_id for i in outcome.ranked
    )


def test_a_plan_factory_is_imported_and_checked_at_its_corners_before_ray(tmp_path, monkeypatch):
    (tmp_path / "lab_recipes.py").write_text(
        "from trainables.phases import Phase, PhasePlan\n"
        "def build(params, context):\n"
        "    phases = (Phase('head', 1, 'none', params['lr']),"
        " Phase('top', 2, params['depth'], params['lr'] / 10))\n"
        "    return PhasePlan('x', phases, model=context.model, data=context.data)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    mine = {"plan_factory": "lab_recipes:build", "space": {"lr": [1e-4, 1e-2], "depth": [1, 9]}}
    path = _write(tmp_path, {**TINY, "strategies": {"mine": mine}})
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2
    assert "strategies.mine.space: a value it allows makes a plan that cannot run" in result.output
    assert "the backbone has 6 layer groups" in result.output and "depth=9" in result.output
    mine["space"]["depth"] = [1, 4]
    config = load_experiment(_write(tmp_path, {**TINY, "strategies": {"mine": mine}}))
    plan = build_plan("mine", {"lr": 1e-3, "depth": 3}, config.plan_context())
    assert plan.strategy == "mine" and [p.trainable for p in plan.phases] == ["none", 3]
