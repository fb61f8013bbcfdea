"""Experiment files: good ones load, every mistake is one line, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from search.cli import app
from search.config import ConfigError, ExperimentConfig, load_experiment

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_quickstart_example_is_the_packaged_default():
    packaged = Path(__file__).resolve().parents[2] / "search" / "quickstart.yaml"
    assert (EXAMPLES / "quickstart.yaml").read_text() == packaged.read_text()
    quickstart = load_experiment(None)
    assert quickstart == load_experiment(EXAMPLES / "quickstart.yaml")
    # Only the epoch budget differs from the schema's defaults.
    assert quickstart.search.epoch_scale == 0.5
    assert (
        quickstart.model_copy(
            update={"search": quickstart.search.model_copy(update={"epoch_scale": 1.0})}
        )
        == ExperimentConfig()
    )


def test_a_partial_file_fills_in_defaults(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text("name: mine\nsearch: {num_samples: 4}\nstrategies: {progressive: {}}\n")
    config = load_experiment(path)
    assert config.name == "mine"
    assert config.search.num_samples == 4
    assert [s.strategy for s in config.search_space().strategies] == ["progressive"]
    assert config.target_list()[0].metric == "val/acc"


def test_inline_targets_and_space_overrides(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "targets": [{"metric": "val/loss", "threshold": 0.5, "direction": "min"}],
                "strategies": {
                    "progressive": {"space": {"base_lr": [1e-4, 1e-3], "batch_size": 64}}
                },
            }
        )
    )
    config = load_experiment(path)
    (space,) = config.search_space().strategies
    assert space.params["base_lr"].low == 1e-4 and space.params["base_lr"].log
    assert space.params["batch_size"].value == 64
    assert config.target_list()[0].direction == "min"


BAD_FILES = [
    ("naem: x\n", "naem: unknown key; allowed here: name, dataset"),
    (
        "search: {num_samples: 0}\n",
        "search.num_samples: Input should be greater than or equal to 1",
    ),
    ("search: {sampler: grid}\n", "search.sampler: Input should be 'tpe' or 'random'"),
    ("search: {scheduler: hyperband}\n", "search.scheduler"),
    ("search: {epoch_scale: -1}\n", "search.epoch_scale"),
    ("dataset: {num_samples: ten}\n", "dataset.num_samples: Input should be a valid integer"),
    ("dataset: {val_fraction: 1.5}\n", "dataset.val_fraction"),
    ("dataset: {kind: imagenet}\n", "dataset.kind"),
    ("model: {num_groups: 1}\n", "model.num_groups"),
    ("model: {pretrain: {epochs: 0}}\n", "model.pretrain.epochs"),
    ("model: {pretrain: {epoch: 3}}\n", "model.pretrain.epoch: unknown key; allowed here: enabled"),
    ("strategies: {progresive: {}}\n", "strategies.progresive: unknown strategy; use one of"),
    ("strategies: {}\n", "strategies: name at least one strategy"),
    ("strategies: {progressive: {spaec: {}}}\n", "strategies.progressive.spaec: unknown key"),
    (
        "strategies: {progressive: {space: {base_lr: [1e-2, 1e-4]}}}\n",
        "progressive.space.base_lr: range [0.01, 0.0001] is inverted",
    ),
    (
        "strategies: {progressive: {space: {depth: 2}}}\n",
        "progressive.space.depth: unknown parameter",
    ),
    (
        "strategies: {progressive: {space: {unfreeze_depth: [1, 2.5]}}}\n",
        "unfreeze_depth: takes whole numbers",
    ),
    ("strategies: {progressive: {space: {base_lr: [0, 1e-3]}}}\n", "a log range needs low > 0"),
    (
        "strategies: {progressive: {space: {unfreeze_depth: [1, 9]}}}\n",
        "strategies.progressive.space: a value it allows makes a plan that cannot run:"
        " phases[1] (partial).trainable: the backbone has 6 layer groups",
    ),
    ("targets: imagenet\n", "targets: unknown target set 'imagenet'"),
    (
        "targets: [{metric: val/f1, threshold: 0.5}]\n",
        "targets[0].metric: no strategy reports 'val/f1'",
    ),
    ("targets: [{metric: val/acc}]\n", "targets"),
    ("resources: {workers_per_trial: 0}\n", "resources.workers_per_trial"),
    ("name: 'bad name/with slash'\n", "name: String should match pattern"),
    ("search: [1, 2\n", "line 2: malformed YAML"),
    # Multi-task experiments.
    (
        "strategies: {joint: {}}\n",
        "strategies.joint: needs tasks that dataset.kind synthetic_signs lacks (it has only cls);"
        " set dataset.kind to synthetic_scenes",
    ),
    (
        "dataset: {kind: synthetic_scenes, num_classes: 12}\nstrategies: {joint: {}}\n",
        "dataset: synthetic_scenes supports 2..10 classes, got 12",
    ),
    (
        "dataset: {kind: synthetic_scenes, image_size: 30}\nstrategies: {joint: {}}\n",
        "dataset: synthetic_scenes needs an image_size that is a multiple of 4",
    ),
    (
        "dataset: {kind: synthetic_scenes}\nstrategies: {joint: {space: {alpha: [-2, 2]}}}\n",
        "strategies.joint.space: a value it allows makes a plan that cannot run:"
        " phases[0] (joint).weighting.params.alpha: must be in [-1, 1], got -2.0",
    ),
    (
        "dataset: {kind: synthetic_scenes}\n"
        "strategies: {joint: {space: {weighting: [equal, gradnorm]}}}\n",
        "weighting: use one of equal, loss_ratio",
    ),
    (
        "dataset: {kind: synthetic_scenes}\nstrategies: {joint: {space: {temperature: 0}}}\n",
        "weighting.params.temperature: must be > 0",
    ),
    (
        "dataset: {kind: synthetic_scenes}\nstrategies: {sequential: {space: {ewc_lambda: -1}}}\n",
        "(task/det).ewc: strength must be >= 0",
    ),
    (
        "dataset: {kind: synthetic_scenes}\nstrategies: {joint: {space: {head_lr_seg: 0}}}\n",
        "head_lr.seg: give a positive multiplier",
    ),
    ("search: {objective: paretoo}\n", "search.objective: Input should be 'target_score' or"),
    (
        "storage: {study: /no/such/folder/study.journal}\n",
        "storage.study: the journal file's folder /no/such/folder does not exist",
    ),
    ("- just\n- a list\n", "the file must be a mapping of sections, got list"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES, ids=[m[:40] for _, m in BAD_FILES])
def test_bad_experiment_file_exits_2_with_one_line_and_writes_nothing(tmp_path, text, message):
    path = tmp_path / "experiment.yaml"
    path.write_text(text)
    results = tmp_path / "results"
    result = CliRunner().invoke(app, ["run", str(path), "--results-dir", str(results)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    assert message in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["experiment.yaml"]


@pytest.mark.parametrize("where", ["file", "command line"])
def test_a_storage_path_that_is_a_file_exits_2_before_ray(tmp_path, where):
    taken = tmp_path / "results"
    taken.write_text("not a folder")
    path = tmp_path / "experiment.yaml"
    overrides = ["--results-dir", str(taken / "nested")] if where == "command line" else []
    path.write_text(f"storage: {{path: {taken}}}\n" if where == "file" else "name: x\n")
    result = CliRunner().invoke(app, ["run", str(path), *overrides])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert f"storage.path: {taken} is a file, not a folder" in lines[0]
    assert taken.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["experiment.yaml", "results"]


def test_missing_file_is_named(tmp_path):
    result = CliRunner().invoke(app, ["run", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "nope.yaml: no such file" in result.output


def test_resources_beyond_this_machine_are_refused_before_ray(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text("resources: {workers_per_trial: 64}\n")
    result = CliRunner().invoke(app, ["run", str(path), "--results-dir", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "resources: a trial needs 64 CPUs" in result.output
    assert not (tmp_path / "r").exists()


def test_bad_command_line_override_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["run", "--num-samples", "0", "--results-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "command line: search.num_samples" in result.output


def test_train_refuses_a_file_that_is_not_a_best_config(tmp_path):
    path = tmp_path / "best.yaml"
    path.write_text("name: quickstart\n")
    result = CliRunner().invoke(app, ["train", str(path)])
    assert result.exit_code == 2
    assert "not a phasetune best-config file" in result.output


def test_config_error_is_raised_by_the_loader(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text("search: {seed: -1}\n")
    with pytest.raises(ConfigError, match="search.seed"):
        load_experiment(path)


def test_multitask_example_compares_joint_and_sequential_on_scenes():
    config = load_experiment(EXAMPLES / "multitask.yaml")
    assert config.dataset.kind == "synthetic_scenes" and config.dataset.num_classes == 10
    assert list(config.strategies) == ["joint", "sequential"]
    assert config.targets == "multitask"
    # The documented baselines are evaluated first and fit in the trial budget.
    baselines = config.search_space().points_to_evaluate()
    assert [b["strategy"] for b in baselines] == ["joint"] * 5 + ["sequential"] * 2
    assert config.search.num_samples > len(baselines)


def test_scene_data_defaults_to_the_documents_ten_classes(tmp_path):
    path = tmp_path / "experiment.yaml"
    path.write_text("dataset: {kind: synthetic_scenes}\nstrategies: {joint: {}}\n")
    assert load_experiment(path).data_spec().num_classes == 10
    path.write_text("strategies: {progressive: {}}\n")
    assert load_experiment(path).data_spec().num_classes == 36
