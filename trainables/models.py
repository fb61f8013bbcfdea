"""Backbones with ordered layer groups, task heads, and the cached pretrained backbone.

Every backbone exposes ``layer_groups`` (input side first), ``forward_pyramid``,
``pyramid_channels``, ``pyramid_strides`` and ``out_features``: the built-in
:class:`SmallCNN` natively, any other network through
:func:`trainables.backbones.adapt_backbone`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import torch
from torch import nn

from trainables.atomic import made_once, replaced_atomically
from trainables.backbones import (
    BackboneError,
    adapt_backbone,
    describe_error,
    find_blocks,
    import_factory,
    load_weights,
    torchvision_model,
)
from trainables.data import cache_dir, iterate_batches, load_dataset
from trainables.phases import ModelSpec, PretrainSpec

__all__ = [
    "ClassifierHead",
    "SmallCNN",
    "TaskModel",
    "backbone_blocks",
    "build_backbone",
    "build_head",
    "build_model",
    "pretrained_backbone_path",
]

logger = logging.getLogger(__name__)

#: Bump when the backbone architecture or the pretraining loop changes, so stale
#: cached weights are never loaded into a different network.
PRETRAIN_VERSION = 1

#: Input pixels per cell of the detection head's output (the data's box targets).
DETECTION_STRIDE = 4


class SmallCNN(nn.Module):
    """A small conv-BN-ReLU backbone whose layers are exposed as ordered groups.

    Group ``i`` has ``width * 2**(i // 2)`` channels and halves the resolution at
    every even group after the first, so depth means the same at any width.
    """

    def __init__(self, width: int = 16, num_groups: int = 6, in_channels: int = 3) -> None:
        super().__init__()
        groups = []
        channels = in_channels
        for i in range(num_groups):
            out = width * 2 ** (i // 2)
            stride = 2 if i > 0 and i % 2 == 0 else 1
            groups.append(
                nn.Sequential(
                    nn.Conv2d(channels, out, 3, stride=stride, padding=1, bias=False),
                    nn.BatchNorm2d(out),
                    nn.ReLU(inplace=True),
                )
            )
            channels = out
        self.layer_groups = nn.ModuleList(groups)
        self.out_features = channels
        #: Output channels and stride (input pixels per feature cell) of every group.
        self.group_channels = [width * 2 ** (i // 2) for i in range(num_groups)]
        self.group_strides = [2 ** (i // 2) for i in range(num_groups)]
        # Every group's map is a pyramid level.
        self.pyramid_channels = self.group_channels
        self.pyramid_strides = self.group_strides

    def forward_pyramid(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of every group, input side first (dense heads read several)."""
        maps = []
        for group in self.layer_groups:
            images = group(images)
            maps.append(images)
        return maps

    def forward_maps(self, images: torch.Tensor) -> torch.Tensor:
        """Feature maps of the last group."""
        for group in self.layer_groups:
            images = group(images)
        return images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Globally pooled features, shape (N, out_features)."""
        return self.forward_maps(images).mean(dim=(2, 3))


class ClassifierHead(nn.Module):
    """Dropout then a linear classifier over the globally pooled last feature map."""

    def __init__(self, in_features: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_features, num_classes)

    def forward(self, pyramid: list[torch.Tensor]) -> torch.Tensor:
        return self.linear(self.dropout(pyramid[-1].mean(dim=(2, 3))))


class TaskModel(nn.Module):
    """One shared backbone with one head per task; every head reads the feature pyramid."""

    def __init__(self, backbone: nn.Module, heads: dict[str, nn.Module]) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict(heads)

    @property
    def layer_groups(self) -> nn.ModuleList:
        return self.backbone.layer_groups

    def forward(
        self, images: torch.Tensor, tasks: tuple[str, ...] | None = None
    ) -> dict[str, torch.Tensor]:
        pyramid = self.backbone.forward_pyramid(images)
        names = tasks if tasks is not None else tuple(self.heads)
        return {task: self.heads[task](pyramid) for task in names}


def build_head(task: str, backbone: nn.Module, num_classes: int, dropout: float) -> nn.Module:
    """The head of ``task`` (cls, seg or det) on ``backbone``'s feature pyramid."""
    from trainables.heads import DetectionHead, SegmentationHead

    channels, strides = list(backbone.pyramid_channels), list(backbone.pyramid_strides)
    if task == "cls":
        return ClassifierHead(backbone.out_features, num_classes, dropout)
    if task == "seg":
        return SegmentationHead(channels, strides, num_classes, dropout=dropout)
    if task == "det":
        if min(strides) > DETECTION_STRIDE:
            raise BackboneError(
                f"model: the detection head needs a feature map at stride {DETECTION_STRIDE}"
                f" or finer; the backbone's finest is {min(strides)}"
            )
        return DetectionHead(channels, strides, num_classes, stride=DETECTION_STRIDE)
    raise ValueError(f"tasks: unknown task {task!r}; use cls, seg or det")


def _network(spec: ModelSpec) -> nn.Module:
    """The network ``spec`` names, as built (a torchvision or factory classifier included)."""
    if spec.backbone == "small_cnn":
        return SmallCNN(width=spec.width, num_groups=spec.num_groups)
    if spec.backbone.startswith("torchvision:"):
        return torchvision_model(spec.backbone.removeprefix("torchvision:"))
    if spec.backbone != "factory":
        raise BackboneError(
            f"model.backbone: unknown backbone {spec.backbone!r}; use small_cnn,"
            " torchvision:<name> or factory"
        )
    if not spec.factory:
        raise BackboneError("model.factory: backbone factory needs 'package.module:function'")
    build = import_factory(spec.factory)
    try:
        network = build(**spec.factory_args)
    except Exception as error:
        raise BackboneError(
            f"model.factory: {spec.factory}(**model.factory_args) failed: {describe_error(error)}"
        ) from None
    if not isinstance(network, nn.Module):
        raise BackboneError(
            f"model.factory: {spec.factory} returned {type(network).__name__}, not an nn.Module"
        )
    return network


def build_backbone(spec: ModelSpec, *, load_weights_file: bool = True) -> nn.Module:
    """The backbone ``spec`` names, with ``spec.weights`` loaded if given (no pretraining).

    Raises:
        BackboneError: an unknown backbone, a factory or weights file that does not
            work, or more groups than the network has blocks; the message names the field.
    """
    network = _network(spec)
    if spec.weights and load_weights_file:
        load_weights(network, spec.weights, strict=spec.strict_weights)
    groups = tuple(spec.groups) if spec.groups is not None else None
    return adapt_backbone(network, spec.num_groups, blocks=spec.blocks, groups=groups)


def backbone_blocks(spec: ModelSpec) -> int:
    """The most layer groups ``spec``'s network can be split into (its own group count
    where it brings ``layer_groups``)."""
    network = _network(spec)
    if hasattr(network, "layer_groups") and hasattr(network, "forward_pyramid"):
        return len(network.layer_groups)
    return len(find_blocks(network, spec.blocks))


def build_model(
    spec: ModelSpec,
    num_classes: int,
    tasks: tuple[str, ...] = ("cls",),
    *,
    load_pretrained: bool = True,
) -> TaskModel:
    """The model a plan describes (one head per task), with pretrained weights if asked:
    ``spec.weights`` from a local file, else the synthetic source task's if
    ``spec.pretrained``."""
    backbone = build_backbone(spec, load_weights_file=load_pretrained)
    if spec.pretrained is not None and spec.weights is None and load_pretrained:
        path = ensure_pretrained(spec)
        backbone.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    heads = {task: build_head(task, backbone, num_classes, spec.dropout) for task in tasks}
    return TaskModel(backbone, heads)


def _pretrain_key(spec: ModelSpec) -> str:
    assert spec.pretrained is not None
    payload = {
        "version": PRETRAIN_VERSION,
        "backbone": spec.backbone,
        "width": spec.width,
        "num_groups": spec.num_groups,
        "pretrain": dataclasses.asdict(spec.pretrained),
    }
    # Only other backbones add these, so small_cnn's cached files keep their names.
    for field in ("factory", "blocks", "groups"):
        if getattr(spec, field) is not None:
            payload[field] = list(spec.groups) if field == "groups" else getattr(spec, field)
    if spec.factory_args:
        payload["factory_args"] = dict(spec.factory_args)
    encoded = json.dumps(payload, sort_keys=True, default=str).encode()
    digest = hashlib.sha256(encoded).hexdigest()[:16]
    name = spec.backbone.replace(":", "-")
    return f"{name}-w{spec.width}-g{spec.num_groups}-{digest}"


def pretrained_backbone_path(spec: ModelSpec) -> Path:
    """Cache file of the backbone pretrained as ``spec.pretrained`` says."""
    return cache_dir() / "backbones" / f"{_pretrain_key(spec)}.pt"


def ensure_pretrained(spec: ModelSpec) -> Path:
    """Pretrain the backbone on the source task once; later calls load the cache.

    A file lock makes concurrent trials wait for one pretraining instead of all
    running it.
    """
    path = pretrained_backbone_path(spec)

    def pretrain() -> None:
        state, val_acc = pretrain_backbone(spec)
        logger.info("pretrained backbone: source-task val acc %.3f -> %s", val_acc, path)
        with replaced_atomically(path) as partial:
            torch.save(state, partial)

    made_once(lambda: path if path.exists() else None, pretrain, Path(str(path) + ".lock"))
    return path


def pretrain_backbone(spec: ModelSpec) -> tuple[dict[str, torch.Tensor], float]:
    """Train a fresh backbone on the synthetic source task.

    Returns:
        The backbone's state dict and its source-task validation accuracy.
    """
    # Forked: a run that pretrains first must draw the same random numbers
    # afterwards as one that finds the backbone cached.
    with torch.random.fork_rng(devices=[]):
        return _pretrain(spec.pretrained or PretrainSpec(), spec)


class _PooledClassifier(nn.Module):
    """The source task's model: a linear classifier on the pooled last pyramid map
    (a factory's own ``forward`` may return anything)."""

    def __init__(self, backbone: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.forward_pyramid(images)[-1].mean(dim=(2, 3)))


def _pretrain(pretrain: PretrainSpec, spec: ModelSpec) -> tuple[dict[str, torch.Tensor], float]:
    torch.manual_seed(pretrain.seed)
    data = load_dataset(pretrain.data)
    backbone = build_backbone(spec, load_weights_file=False)
    head = nn.Linear(backbone.out_features, data.num_classes)
    model = _PooledClassifier(backbone, head)
    optimizer = torch.optim.Adam(model.parameters(), lr=pretrain.lr)
    generator = torch.Generator().manual_seed(pretrain.seed)
    model.train()
    for epoch in range(pretrain.epochs):
        total, correct = 0, 0
        for images, labels in iterate_batches(
            data.train, pretrain.batch_size, shuffle=True, generator=generator
        ):
            logits = model(images)
            loss = nn.functional.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += len(labels)
            correct += int((logits.argmax(1) == labels).sum())
        logger.info("pretrain epoch %d: train acc %.3f", epoch + 1, correct / max(total, 1))
    model.eval()
    with torch.no_grad():
        batches = iterate_batches(data.val, 256, shuffle=False, generator=None)
        predictions = torch.cat([model(images).argmax(1) for images, _ in batches])
    val_acc = float((predictions == data.val.labels).float().mean())
    return backbone.state_dict(), val_acc
