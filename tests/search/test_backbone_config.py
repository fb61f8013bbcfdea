"""The model section with other backbones: defaults, one-line errors, and retraining."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
import yaml
from typer.testing import CliRunner

from search.cli import app
from search.config import load_experiment
from tests.conftest import TINY_DATA, TINY_PROGRESSIVE, write_best
from tests.trainables.test_backbones import TinyResNet
from trainables.phases import PhasePlan
from trainables.strategies import PlanContext, build_plan

FACTORY = "netfactory:build"


@pytest.fixture
def netfactory(tmp_path, monkeypatch):
    """A user's module ``netfactory`` (a ResNet-shaped network), importable by name."""
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "netfactory.py").write_text(
        "from tests.trainables.test_backbones import TinyResNet\n\n\n"
        "def build(width=4):\n"
        "    return TinyResNet(width)\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    importlib.invalidate_caches()
    yield FACTORY
    sys.modules.pop("netfactory", None)


def _write(tmp_path, model: dict, **sections) -> str:
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump({"model": model, **sections}))
    return str(path)


def test_groups_set_num_groups_and_the_search_space_follows(tmp_path, netfactory):
    groups = ["conv1,bn1,layer1", "layer2", "layer3", "layer4.0", "layer4.1"]
    config = load_experiment(_write(tmp_path, {"factory": netfactory, "groups": groups}))
    assert config.model.num_groups == 5
    assert config.model_spec().groups == tuple(groups)
    (progressive,) = [s for s in config.search_space().strategies if s.strategy == "progressive"]
    assert progressive.params["unfreeze_depth"].high == 4


def test_a_small_cnn_file_is_unchanged(tmp_path):
    config = load_experiment(_write(tmp_path, {"num_groups": 4}))
    spec = config.model_spec()
    assert (spec.backbone, spec.num_groups, spec.weights) == ("small_cnn", 4, None)
    assert spec.pretrained is not None


BAD_MODELS = [
    ({"backbone": "resnet50"}, "model.backbone: unknown backbone 'resnet50'; use small_cnn"),
    ({"backbone": "torchvision:"}, "model.backbone: unknown backbone"),
    ({"weights": "/no/such/dir/w.pt"}, "model.weights: no such file '/no/such/dir/w.pt'"),
    ({"factory": "netfactory.build"}, "model.factory: write 'package.module:function'"),
    (
        {"factory": "no_such_package_x.models:build"},
        "model.factory: cannot import 'no_such_package_x.models' (ModuleNotFoundError",
    ),
    ({"factory": "netfactory:nope"}, "model.factory: 'netfactory' has no callable 'nope'"),
    (
        {"factory": FACTORY, "factory_args": {"colour": 1}},
        "model.factory: netfactory:build(**model.factory_args) failed: TypeError",
    ),
    (
        {"factory": FACTORY, "num_groups": 8},
        "model.num_groups: the model has 5 blocks, so 1 to 5 groups, got 8",
    ),
    (
        {"factory": FACTORY, "groups": ["conv1,bn1", "layer2", "layer3", "layer4"]},
        "model.groups: expected 'layer1' (the next module in forward order), got 'layer2'",
    ),
    (
        {"factory": FACTORY, "groups": ["conv1,bn1,layer1", "layer2", "layer3,layer4"]}
        | {"num_groups": 2},
        "model.num_groups: is 2 but model.groups names 3",
    ),
    ({"factory": FACTORY, "blocks": "trunk"}, "model.blocks: the model has no module 'trunk'"),
    ({"groups": ["a", "b"]}, "model.groups: small_cnn has its own layer groups"),
    ({"backbone": "small_cnn", "factory": FACTORY}, "model.backbone: is 'small_cnn' but"),
    ({"backbone": "factory"}, "model.factory: backbone factory needs 'package.module:function'"),
]


@pytest.mark.parametrize(("model", "message"), BAD_MODELS, ids=[m[:40] for _, m in BAD_MODELS])
def test_a_bad_model_section_exits_2_with_one_line(tmp_path, netfactory, model, message):
    results = tmp_path / "results"
    path = _write(tmp_path, model, strategies={"progressive": {}})
    result = CliRunner().invoke(app, ["run", path, "--results-dir", str(results)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert not results.exists()


def test_weights_files_that_cannot_load_are_one_line(tmp_path, netfactory):
    text = tmp_path / "notes.pt"
    text.write_text("not a tensor file")
    state = TinyResNet(width=4).state_dict()
    del state["layer2.0.bn1.running_mean"]
    partial = tmp_path / "partial.pt"
    torch.save(state, partial)
    cases = [
        ({"weights": str(text)}, "is not a state dict saved with torch.save"),
        (
            {"weights": str(partial)},
            "does not fit the model: 1 missing (layer2.0.bn1.running_mean)",
        ),
    ]
    for model, message in cases:
        path = _write(tmp_path, {"factory": netfactory, **model})
        result = CliRunner().invoke(app, ["run", path, "--results-dir", str(tmp_path / "r")])
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and "model.weights: " in lines[0] and message in lines[0], lines
    config = load_experiment(
        _write(tmp_path, {"factory": netfactory, "weights": str(partial), "strict_weights": False})
    )
    assert not config.model_spec().strict_weights


def test_an_exported_plan_with_a_factory_and_weights_trains_again(tmp_path, netfactory):
    source = TinyResNet(width=4)
    weights = tmp_path / "resnet.pt"
    torch.save(source.state_dict(), weights)
    config = load_experiment(_write(tmp_path, {"factory": netfactory, "weights": str(weights)}))
    params = {k: v for k, v in TINY_PROGRESSIVE.items() if k != "dropout"}
    context = PlanContext(model=config.model_spec(), data=TINY_DATA, seed=0)
    plan = build_plan("progressive", params, context)
    best = tmp_path / "best.yaml"
    write_best(best, plan)
    assert PhasePlan.from_dict(yaml.safe_load(best.read_text())["plan"]) == plan
    out = tmp_path / "retrain"
    result = CliRunner().invoke(app, ["train", str(best), "--output", str(out), "--threads", "1"])
    assert result.exit_code == 0, result.output
    trained = torch.load(out / "model.pt", weights_only=True)
    # Phase 1 froze the stem; phase 3 trained it: it left the file's values.
    assert not torch.equal(trained["backbone.layer_groups.0.conv1.weight"], source.conv1.weight)
    assert trained["backbone.layer_groups.0.conv1.weight"].shape == source.conv1.weight.shape
