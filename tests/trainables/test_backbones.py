"""Layer groups of any backbone: splitting, unfreezing, the pyramid, weights and factories.

The networks here are shaped like MobileNetV2 and ResNet (the same module layout as
torchvision's) at tiny widths, so they run in milliseconds on 32x32 images.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import sys
import types

import pytest
import torch
import yaml
from torch import nn

from analysis.targets import NSL
from search.config import ConfigError, load_experiment
from tests.conftest import TINY_DATA, TINY_PRETRAIN, TINY_PROGRESSIVE
from trainables.backbones import (
    BackboneError,
    GroupedBackbone,
    adapt_backbone,
    find_blocks,
    group_of_layer,
    layer_groups,
    leaf_layers,
    load_weights,
    unfreeze_depth_from_layer,
)
from trainables.engine import (
    EngineContext,
    build_optimizer,
    configure_phase,
    run_plan,
    set_train_mode,
)
from trainables.models import TaskModel, backbone_blocks, build_backbone, build_head, build_model
from trainables.phases import ModelSpec, Phase, PhasePlan
from trainables.strategies import PlanContext, build_plan

# -- the two shapes ---------------------------------------------------------------


def conv_bn_relu6(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1):
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expansion 1x1, depthwise 3x3, linear projection 1x1; residual at stride 1."""

    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        layers = [conv_bn_relu6(c_in, hidden, 1)] if expansion != 1 else []
        layers += [
            conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class TinyMobileNetV2(nn.Module):
    """``features``: a stem, 12 inverted residual blocks and a final 1x1 conv."""

    #: (expansion, channels, repeats, stride), as torchvision's table at 1/4 width.
    SETTINGS = ((1, 8, 1, 1), (4, 8, 2, 2), (4, 12, 3, 2), (4, 16, 2, 2), (4, 24, 2, 1))
    SETTINGS += ((4, 32, 2, 2),)

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn_relu6(3, 8, 3, 2)]
        channels = 8
        for expansion, out, repeats, stride in self.SETTINGS:
            for i in range(repeats):
                layers.append(InvertedResidual(channels, out, stride if i == 0 else 1, expansion))
                channels = out
        layers.append(conv_bn_relu6(channels, 64, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class TinyResNet(nn.Module):
    """conv1/bn1/relu/maxpool, layer1..layer4 of two BasicBlocks each, avgpool, fc."""

    def __init__(self, width: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        channels = width
        for i in range(4):
            out = width * 2**i
            stride = 1 if i == 0 else 2
            layer = nn.Sequential(BasicBlock(channels, out, stride), BasicBlock(out, out, 1))
            setattr(self, f"layer{i + 1}", layer)
            channels = out
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


SHAPES = {"mobilenet_v2": TinyMobileNetV2, "resnet": TinyResNet}
#: Blocks each shape splits into, in forward order.
BLOCK_PATHS = {
    "mobilenet_v2": [(f"features.{i}",) for i in range(14)],
    "resnet": [("conv1", "bn1", "relu", "maxpool"), ("layer1",), ("layer2",), ("layer3",)]
    + [("layer4",)],
}
CLASSIFIERS = {"mobilenet_v2": "classifier.", "resnet": "fc."}


def _feature_params(model: nn.Module, shape: str) -> set[int]:
    return {id(p) for n, p in model.named_parameters() if not n.startswith(CLASSIFIERS[shape])}


# -- groups ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_blocks_follow_the_forward_order(shape):
    blocks = find_blocks(SHAPES[shape]())
    assert [tuple(path for path, _ in block) for block in blocks] == BLOCK_PATHS[shape]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("balance", ["blocks", "params"])
def test_groups_are_ordered_and_cover_every_feature_parameter_once(shape, balance):
    model = SHAPES[shape]()
    num_blocks = len(BLOCK_PATHS[shape])
    flat = [path for block in BLOCK_PATHS[shape] for path in block]
    for num_groups in range(1, num_blocks + 1):
        groups = layer_groups(model, num_groups, balance=balance)
        assert len(groups) == num_groups
        assert [path for group in groups for path in group.paths] == flat  # input -> output
        ids = [id(p) for group in groups for p in group.parameters()]
        assert len(ids) == len(set(ids)) and set(ids) == _feature_params(model, shape)
        if balance == "blocks":
            blocks_per_group = [
                sum(1 for block in BLOCK_PATHS[shape] if block[0] in g.paths) for g in groups
            ]
            assert max(blocks_per_group) - min(blocks_per_group) <= 1, blocks_per_group
            # The remainder goes to the input side: the top groups, unfrozen first, are finest.
            assert blocks_per_group == sorted(blocks_per_group, reverse=True)


def test_param_balance_puts_the_heavy_last_stage_in_a_group_of_its_own():
    groups = layer_groups(TinyResNet(), 2, balance="params")
    assert groups[1].paths == ("layer4",)
    # By block count the top group holds two of the five blocks.
    assert layer_groups(TinyResNet(), 2)[1].paths == ("layer3", "layer4")


def test_more_groups_than_blocks_is_refused_naming_the_field():
    with pytest.raises(BackboneError, match=r"model.num_groups: the model has 5 blocks"):
        layer_groups(TinyResNet(), 6)


def test_named_groups_may_split_a_stage_and_leave_out_parameter_free_modules():
    names = ["conv1,bn1", "layer1,layer2", "layer3", "layer4.0", "layer4.1"]
    groups = layer_groups(TinyResNet(), groups=names)
    assert [g.paths for g in groups] == [
        ("conv1", "bn1", "relu", "maxpool"),
        ("layer1", "layer2"),
        ("layer3",),
        ("layer4.0",),
        ("layer4.1",),
    ]
    mobile = layer_groups(
        TinyMobileNetV2(), groups=["features.0-3", "features.4-9", "features.10-13"]
    )
    assert [len(g.paths) for g in mobile] == [4, 6, 4]


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        (["conv1,bn1", "layer2", "layer3", "layer4"], "expected 'layer1'"),
        (["conv1,bn1", "layer1", "layer2", "layer3"], "'layer4' is in no group"),
        (["conv1,bn1,layer1", "layer3", "layer2", "layer4"], "expected 'layer2'"),
        (["conv1,bn1,layer1", "layer2-3"], "a range is written 'parent.first-last'"),
    ],
)
def test_named_groups_must_name_every_block_once_in_order(groups, message):
    with pytest.raises(BackboneError, match=message) as error:
        layer_groups(TinyResNet(), groups=groups)
    assert str(error.value).startswith("model.groups: ") and "\n" not in str(error.value)


# -- the engine trains exactly the top k groups ----------------------------------


def _task_model(shape: str, num_groups: int, tasks=("seg", "det", "cls")) -> TaskModel:
    backbone = adapt_backbone(SHAPES[shape](), num_groups)
    heads = {task: build_head(task, backbone, 4, 0.1) for task in tasks}
    return TaskModel(backbone, heads)


def _group_state(model: TaskModel, index: int) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.backbone.layer_groups[index].state_dict().items()}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("depth", [0, 2, "all"])
def test_a_phase_with_unfreeze_depth_k_trains_exactly_the_top_k_groups(shape, depth):
    torch.manual_seed(0)
    model = _task_model(shape, 4, tasks=("cls",))
    before = [_group_state(model, i) for i in range(4)]
    phase = Phase("partial", 1, trainable=depth, lr=0.05)
    trainable = configure_phase(model, phase)
    optimizer = build_optimizer(model, phase, trainable, weight_decay=0.0)
    images, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 4, (8,))
    for _ in range(2):
        set_train_mode(model, trainable)
        loss = nn.functional.cross_entropy(model(images)["cls"], labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    expected = {0: [], 2: [2, 3], "all": [0, 1, 2, 3]}[depth]
    assert trainable == expected
    for index in range(4):
        after = _group_state(model, index)
        same = all(torch.equal(after[k], before[index][k]) for k in after)
        # Frozen: weights and BatchNorm statistics bit-identical; trainable: moved.
        assert same == (index not in expected), (index, expected)


# -- the "layer 140" index --------------------------------------------------------


def test_a_keras_layer_index_maps_to_the_group_that_holds_it():
    backbone = adapt_backbone(TinyMobileNetV2(), 6)
    leaves = leaf_layers(backbone)
    assert len(leaves) == 99  # 3 + 5 + 11 * 8 + 3: every conv, BN and ReLU6
    group_paths = [g.paths for g in backbone.layer_groups]
    assert group_paths[5] == ("features.12", "features.13")
    # Leaves 88-95 are features.12 (the top group's first block), 87 ends features.11.
    assert group_of_layer(backbone, 88) == 5 and group_of_layer(backbone, 87) == 4
    # "Layer 140 of Keras's 155" is the same share of this network: leaf 89, top group.
    assert int(140 / 155 * len(leaves)) == 89
    assert group_of_layer(backbone, 140, of=155) == 5
    assert unfreeze_depth_from_layer(backbone, 140, of=155) == 1
    assert unfreeze_depth_from_layer(backbone, 0) == 6
    with pytest.raises(BackboneError, match="99 leaf layers"):
        group_of_layer(backbone, 99)


# -- the pyramid and the heads ------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_pyramid_matches_the_heads_and_a_three_task_model_runs(shape):
    torch.manual_seed(0)
    model = _task_model(shape, 4)
    backbone = model.backbone
    assert isinstance(backbone, GroupedBackbone)
    pyramid = backbone.forward_pyramid(torch.randn(2, 3, 32, 32))
    assert [m.shape[1] for m in pyramid] == backbone.pyramid_channels
    assert [32 // m.shape[-1] for m in pyramid] == backbone.pyramid_strides
    # ResNet's stride-2 level is the stem's ReLU, before its max-pool.
    assert backbone.pyramid_strides == [2, 4, 8, 16, 32]
    for task in ("seg", "det"):
        lateral = model.heads[task].fusion.lateral
        read = [backbone.pyramid_channels[i] for i in model.heads[task].fusion.levels]
        assert [conv.in_channels for conv in lateral] == read
    assert model.heads["cls"].linear.in_features == backbone.out_features == pyramid[-1].shape[1]
    outputs = model(torch.randn(2, 3, 32, 32))
    assert outputs["cls"].shape == (2, 4)
    assert outputs["seg"].shape == (2, 5, 32, 32)
    assert outputs["det"].shape == (2, 4 + 4, 8, 8)
    outputs["seg"].mean().backward()


def test_the_dry_forward_pass_leaves_modes_and_statistics_alone():
    network = TinyResNet()
    network.layer2.eval()
    stats = network.bn1.running_mean.clone()
    backbone = adapt_backbone(network, 3)
    assert torch.equal(network.bn1.running_mean, stats)
    assert not network.layer2.training and network.layer1.training and backbone.training


# -- factories, weights and plans ---------------------------------------------------


@pytest.fixture
def mymodels(tmp_path, monkeypatch):
    """A user's module ``mymodels`` with ``build(width, shape)``, importable by name."""
    (tmp_path / "mymodels.py").write_text(
        "from tests.trainables.test_backbones import TinyMobileNetV2, TinyResNet\n\n\n"
        "def build(width=8, shape='resnet'):\n"
        "    return TinyResNet(width) if shape == 'resnet' else TinyMobileNetV2()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield "mymodels:build"
    sys.modules.pop("mymodels", None)


def _experiment(tmp_path, model: dict) -> object:
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump({"model": model, "strategies": {"progressive": {}}}))
    return load_experiment(path)


def test_a_factory_by_import_path_runs_a_plan_end_to_end(tmp_path, mymodels):
    config = _experiment(tmp_path, {"factory": mymodels, "factory_args": {"width": 4}})
    assert config.model.backbone == "factory"
    assert config.model.num_groups == 5  # default 6, capped at the network's 5 blocks
    spec = dataclasses.replace(config.model_spec(), pretrained=TINY_PRETRAIN, dropout=0.1)
    assert backbone_blocks(spec) == 5
    params = {**TINY_PROGRESSIVE, "unfreeze_depth": 2}
    plan = build_plan("progressive", params, PlanContext(model=spec, data=TINY_DATA, seed=0))
    # The plan survives the export round trip that `phasetune train` reads.
    text = yaml.safe_dump(plan.to_dict())
    assert PhasePlan.from_dict(yaml.safe_load(text)) == plan

    class Reporter:
        rank, world_size = 0, 1

        def __init__(self) -> None:
            self.reports: list[dict] = []

        def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
            self.reports.append(metrics)

        def restore(self) -> None:
            return None

    reporter = Reporter()
    run_plan(plan, EngineContext(targets=NSL.targets, threads=1), reporter)
    assert [r["phase"] for r in reporter.reports] == [1, 2, 3]
    assert all(math.isfinite(r["val/acc"]) and 0 <= r["val/acc"] <= 1 for r in reporter.reports)
    assert reporter.reports[1]["lr/group3"] > 0 and reporter.reports[1]["lr/group2"] == 0


def test_weights_from_a_local_file_are_the_files(tmp_path, mymodels):
    source = TinyResNet(width=4)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)  # unlike any fresh initialisation
    path = tmp_path / "resnet.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    config = _experiment(
        tmp_path, {"factory": mymodels, "factory_args": {"width": 4}, "weights": str(path)}
    )
    spec = config.model_spec()
    assert spec.weights == str(path) and spec.pretrained is None  # weights replace pretraining
    model = build_model(spec, num_classes=6)
    expected = source.state_dict()
    for group in model.backbone.layer_groups:
        for path_name, unit in zip(group.paths, group, strict=True):
            for key, value in unit.state_dict().items():
                assert torch.equal(value, expected[f"{path_name}.{key}"]), (path_name, key)


def test_a_weights_file_that_does_not_fit_is_refused_or_loaded_in_part(tmp_path, caplog):
    state = TinyResNet(width=4).state_dict()
    state["fc.weight"] = torch.zeros(3, 32)  # another classifier
    del state["layer1.0.conv1.weight"]
    path = tmp_path / "w.pt"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, path)
    with pytest.raises(BackboneError, match="1 missing .* 1 wrong shape") as error:
        load_weights(TinyResNet(width=4), path)
    assert "\n" not in str(error.value) and "strict_weights: false" in str(error.value)
    network = TinyResNet(width=4)
    report = load_weights(network, path, strict=False)
    assert report.missing == ("layer1.0.conv1.weight",) and report.mismatched == ("fc.weight",)
    assert torch.equal(network.layer2[0].conv1.weight, state["layer2.0.conv1.weight"])
    assert "fc.weight" in caplog.text


def test_a_module_with_its_own_layer_groups_is_used_as_it_is(tmp_path, mymodels):
    from trainables.models import SmallCNN

    own = SmallCNN(width=4, num_groups=3)
    assert adapt_backbone(own) is own
    with pytest.raises(BackboneError, match="its own 3 layer groups; set it to 3"):
        adapt_backbone(own, 4)


# -- torchvision, optional ----------------------------------------------------------


@pytest.mark.torchvision
def test_torchvision_mobilenet_v2_splits_into_groups_that_unfreeze_from_the_top():
    spec = ModelSpec(backbone="torchvision:mobilenet_v2", num_groups=6, pretrained=None)
    assert backbone_blocks(spec) == 19
    model = build_model(spec, num_classes=5)
    assert len(model.layer_groups) == 6
    assert configure_phase(model, Phase("partial", 1, trainable=2, lr=1e-3)) == [4, 5]
    for index, group in enumerate(model.layer_groups):
        assert all(p.requires_grad == (index >= 4) for p in group.parameters())
    assert model.eval()(torch.randn(1, 3, 64, 64))["cls"].shape == (1, 5)


def test_torchvision_that_does_not_import_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    with pytest.raises(ConfigError) as error:
        _experiment(tmp_path, {"backbone": "torchvision:mobilenet_v2"})
    message = str(error.value)
    assert "\n" not in message
    assert "model.backbone: torchvision:mobilenet_v2 needs torchvision" in message
    assert "install the torchvision extra" in message
    with pytest.raises(BackboneError, match="needs torchvision"):
        build_backbone(ModelSpec(backbone="torchvision:resnet18", pretrained=None))


def test_torchvision_models_are_built_by_name_with_no_weights(tmp_path, monkeypatch):
    """Against a stand-in for torchvision's documented API, where the real one does not import."""
    calls = []
    models = types.ModuleType("torchvision.models")

    def get_model(name, **config):
        calls.append((name, config))
        return TinyMobileNetV2()

    models.get_model = get_model
    models.list_models = lambda module=None: ["mobilenet_v2"] if module is models else []
    package = types.ModuleType("torchvision")
    package.models = models
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    config = _experiment(tmp_path, {"backbone": "torchvision:mobilenet_v2"})
    assert config.model.num_groups == 6  # the default: the network has 14 blocks
    model = build_model(config.model_spec(), num_classes=3, load_pretrained=False)
    assert len(model.layer_groups) == 6
    assert calls and all(kwargs == {"weights": None} for _, kwargs in calls)
    with pytest.raises(ConfigError, match="model.backbone: torchvision has no classification"):
        _experiment(tmp_path, {"backbone": "torchvision:fasterrcnn_resnet50_fpn"})
