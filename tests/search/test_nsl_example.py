"""examples/nsl_mobilenet_v2.yaml: it validates as written, its unfreeze depth is the
document's "layers 140+" as its comment derives it, and the very file runs a search."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from search.config import ModelConfig, load_experiment
from search.experiment import run_search
from spaces import Fixed, IntRange
from tests.search.test_torchvision_search import check_outcome, write_image_folder, write_weights
from trainables.phases import ModelSpec, PhasePlan
from trainables.strategies import build_plan

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nsl_mobilenet_v2.yaml"


def _progressive(config):
    (space,) = config.search_space().strategies
    assert space.strategy == "progressive"
    return space


def test_the_example_validates_as_written_but_for_building_the_network(tmp_path, monkeypatch):
    """Every section, the search space and the document's baseline plan; building
    MobileNetV2 needs torchvision, which the tests below use."""
    raw = yaml.safe_load(EXAMPLE.read_text())
    monkeypatch.chdir(tmp_path)
    classes = tuple(f"sign{i:02d}" for i in range(raw["dataset"]["num_classes"]))
    write_image_folder(tmp_path / raw["dataset"]["path"], classes=classes, per_class=2)
    (tmp_path / raw["model"]["weights"]).write_bytes(b"")  # a stand-in: not loaded here
    built = []
    monkeypatch.setattr(ModelConfig, "check", lambda self, tasks, n: built.append(n))
    config = load_experiment(EXAMPLE)
    assert built == [36]
    dataset = config.dataset
    assert dataset.path == str(tmp_path / "data" / "nsl")
    assert (dataset.image_size, dataset.resize, dataset.crop_scale) == (224, "shorter_side", 0.8)
    assert dataset.normalize == "imagenet" and not dataset.hflip
    assert config.model.backbone == "torchvision:mobilenet_v2"
    assert config.model.weights == str(tmp_path / "mobilenet_v2_imagenet.pt")
    assert (config.resources.workers_per_trial, config.resources.gpus_per_worker) == (1, 1.0)
    space = _progressive(config)
    assert space.params["preset"] == Fixed("medium")
    # Centred on the depth the file's comment derives for 12 groups.
    assert config.model.num_groups == 12
    assert space.params["unfreeze_depth"] == IntRange(1, 5)
    (baseline,) = space.baseline_points()
    params = {k.split("/", 1)[1]: v for k, v in baseline.items() if k != "strategy"}
    assert params["unfreeze_depth"] == 3
    plan = build_plan("progressive", {**params, "preset": "medium"}, config.plan_context())
    assert [p.epochs for p in plan.phases] == [3, 3, 4]
    assert [p.trainable for p in plan.phases] == ["none", 3, "all"]
    assert [p.lr for p in plan.phases] == pytest.approx([1e-3, 1e-4, 1e-5])


@pytest.mark.torchvision
def test_the_examples_depth_is_layer_140_of_155_on_mobilenet_v2():
    from trainables.backbones import group_of_layer, unfreeze_depth_from_layer
    from trainables.models import build_backbone

    raw = yaml.safe_load(EXAMPLE.read_text())
    num_groups = raw["model"]["num_groups"]
    spec = ModelSpec(backbone=raw["model"]["backbone"], num_groups=num_groups, pretrained=None)
    backbone = build_backbone(spec)
    depth = unfreeze_depth_from_layer(backbone, 140, of=155)
    low, high = raw["strategies"]["progressive"]["space"]["unfreeze_depth"]
    assert depth == 3 == (low + high) / 2
    assert backbone.layer_groups[group_of_layer(backbone, 140, of=155)].paths == ("features.16",)
    trained = [path for group in backbone.layer_groups[-depth:] for path in group.paths]
    assert trained == ["features.16", "features.17", "features.18"]
    # The comment's layout: the input side's 14 blocks in pairs, then one block a group.
    assert [len(group.paths) for group in backbone.layer_groups] == [2] * 7 + [1] * 5


@pytest.mark.slow
@pytest.mark.torchvision
def test_the_example_runs_on_tiny_data_on_the_cpu(ray_session, tmp_path):
    """The file as written but for where its data and weights are and how big the run is."""
    raw = yaml.safe_load(EXAMPLE.read_text())
    data = write_image_folder(tmp_path / "nsl")
    weights = write_weights(tmp_path / "mobilenet_v2_imagenet.pt", "mobilenet_v2")
    del raw["dataset"]["num_classes"]  # the tiny folder's 3, read from it
    raw["dataset"].update(path=str(data), image_size=32)
    raw["model"]["weights"] = str(weights)
    # The document's 3+3+4 at a tenth: 1+1+1.
    raw["search"].update(num_samples=2, epoch_scale=0.1)
    raw["resources"].update(cpus_per_worker=1, gpus_per_worker=0)
    raw["storage"]["path"] = str(tmp_path / "results")
    path = tmp_path / "nsl_mobilenet_v2.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    outcome = run_search(load_experiment(path))
    best = check_outcome(outcome, "torchvision:mobilenet_v2", weights, trials=2)
    plan = PhasePlan.from_dict(best["plan"])
    assert plan.model.num_groups == 12
    assert (plan.data.resize, plan.data.crop_scale, plan.data.hflip) == ("shorter_side", 0.8, False)
    assert outcome.experiment_dir.name == "nsl-mobilenet-v2"
    # The document's recipe ran first: layers 140+ (depth 3) in phase 2 at lr 1e-4.
    first = next(i for i in outcome.ranked if i.record.params.get("base_lr") == 1e-3)
    assert [p["trainable"] for p in first.record.plan["phases"]] == ["none", 3, "all"]
    assert first.record.plan["phases"][1]["lr"] == pytest.approx(1e-4)
