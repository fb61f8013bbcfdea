"""Backbones with ordered layer groups, task heads, and the cached pretrained backbone."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from torch import nn

from trainables.data import cache_dir, iterate_batches, load_dataset
from trainables.phases import ModelSpec, PretrainSpec

__all__ = [
    "ClassifierHead",
    "SmallCNN",
    "TaskModel",
    "build_head",
    "build_model",
    "pretrained_backbone_path",
]

logger = logging.getLogger(__name__)

#: Bump when the backbone architecture or the pretraining loop changes, so stale
#: cached weights are never loaded into a different network.
PRETRAIN_VERSION = 1


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

    def __init__(self, backbone: SmallCNN, heads: dict[str, nn.Module]) -> None:
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


def build_head(task: str, backbone: SmallCNN, num_classes: int, dropout: float) -> nn.Module:
    """The head of ``task`` (cls, seg or det) on ``backbone``'s feature pyramid."""
    from trainables.heads import DetectionHead, SegmentationHead

    if task == "cls":
        return ClassifierHead(backbone.out_features, num_classes, dropout)
    if task == "seg":
        return SegmentationHead(
            backbone.group_channels, backbone.group_strides, num_classes, dropout=dropout
        )
    if task == "det":
        return DetectionHead(backbone.group_channels, backbone.group_strides, num_classes)
    raise ValueError(f"tasks: unknown task {task!r}; use cls, seg or det")


def build_model(
    spec: ModelSpec,
    num_classes: int,
    tasks: tuple[str, ...] = ("cls",),
    *,
    load_pretrained: bool = True,
) -> TaskModel:
    """The model a plan describes (one head per task), with pretrained weights if asked."""
    if spec.backbone != "small_cnn":
        raise ValueError(f"model.backbone: unknown backbone {spec.backbone!r}; use 'small_cnn'")
    backbone = SmallCNN(width=spec.width, num_groups=spec.num_groups)
    if spec.pretrained is not None and load_pretrained:
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
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    return f"{spec.backbone}-w{spec.width}-g{spec.num_groups}-{digest}"


def pretrained_backbone_path(spec: ModelSpec) -> Path:
    """Cache file of the backbone pretrained as ``spec.pretrained`` says."""
    return cache_dir() / "backbones" / f"{_pretrain_key(spec)}.pt"


def ensure_pretrained(spec: ModelSpec) -> Path:
    """Pretrain the backbone on the source task once; later calls load the cache.

    A file lock makes concurrent trials wait for one pretraining instead of all
    running it.
    """
    from filelock import FileLock

    path = pretrained_backbone_path(spec)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            state, val_acc = pretrain_backbone(spec)
            logger.info("pretrained backbone: source-task val acc %.3f -> %s", val_acc, path)
            partial = path.with_suffix(f".tmp{os.getpid()}")
            torch.save(state, partial)
            os.replace(partial, path)
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


def _pretrain(pretrain: PretrainSpec, spec: ModelSpec) -> tuple[dict[str, torch.Tensor], float]:
    torch.manual_seed(pretrain.seed)
    data = load_dataset(pretrain.data)
    backbone = SmallCNN(width=spec.width, num_groups=spec.num_groups)
    head = nn.Linear(backbone.out_features, data.num_classes)
    model = nn.Sequential(backbone, head)
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
        predictions = model(data.val.images).argmax(1)
    val_acc = float((predictions == data.val.labels).float().mean())
    return backbone.state_dict(), val_acc
