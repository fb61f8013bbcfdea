"""The ``model`` section: the backbone, its pretraining or weights file, and its heads;
built once while the file is validated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import Field, field_validator, model_validator

from search.config._section import _Section
from trainables.backbones import BackboneError
from trainables.callables import CALLABLE_PATH
from trainables.models import backbone_blocks, build_backbone, build_head
from trainables.phases import ModelSpec, PretrainSpec

__all__ = [
    "DEFAULT_NUM_GROUPS",
    "PRETRAIN_MAX_IMAGE_SIZE",
    "ModelConfig",
    "PretrainConfig",
]


#: Pretraining images are at most this large: the synthetic source task gains little from
#: more pixels, and its cost grows with their square.
PRETRAIN_MAX_IMAGE_SIZE = 64


class PretrainConfig(_Section):
    """Pretraining of the backbone on the synthetic source task (cached by value)."""

    enabled: bool = True
    #: None: the data set's image size, at most PRETRAIN_MAX_IMAGE_SIZE.
    image_size: int | None = Field(None, ge=16, le=256)
    num_samples: int = Field(8000, ge=100, le=2_000_000)
    num_classes: int = Field(20, ge=2, le=1000)
    epochs: int = Field(5, ge=1, le=500)
    lr: float = Field(1e-3, gt=0.0, le=1.0)


#: Layer groups of a backbone when the file does not say (fewer if it has fewer blocks).
DEFAULT_NUM_GROUPS = 6


class ModelConfig(_Section):
    """The backbone and its heads.

    ``backbone``: ``small_cnn`` (built in), ``torchvision:<name>`` (the optional
    torchvision extra; built with ``weights=None``, never downloaded) or ``factory``
    (``factory: "package.module:function"``; ``backbone`` may then be left out).
    Other backbones than small_cnn are split into ``num_groups`` layer groups by
    ``trainables.backbones.layer_groups``: default 6, or one per block when the
    network has fewer; ``groups`` names them outright (then ``num_groups`` is their
    count) and ``blocks`` names the container whose children are the blocks.
    ``weights``, a local state-dict file, replaces the synthetic pretraining.
    """

    backbone: str = "small_cnn"
    #: small_cnn only: channels of its first layer group.
    width: int = Field(16, ge=4, le=512)
    num_groups: int = Field(DEFAULT_NUM_GROUPS, ge=2, le=24)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    pretrain: PretrainConfig = PretrainConfig()
    weights: str | None = None
    strict_weights: bool = True
    factory: str | None = None
    factory_args: dict[str, Any] = Field(default_factory=dict)
    blocks: str | None = None
    groups: list[str] | None = Field(None, min_length=2, max_length=24)

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, backbone: str) -> str:
        if backbone in ("small_cnn", "factory") or (
            backbone.startswith("torchvision:") and len(backbone) > len("torchvision:")
        ):
            return backbone
        raise ValueError(
            f"unknown backbone {backbone!r}; use small_cnn, torchvision:<name>"
            " (e.g. torchvision:mobilenet_v2) or factory with model.factory"
        )

    @field_validator("weights")
    @classmethod
    def _local_weights(cls, weights: str | None) -> str | None:
        if weights is None:
            return None
        path = Path(weights).expanduser().resolve()
        if not path.is_file():
            raise ValueError(
                f"no such file {str(path)!r}; give a local state-dict file"
                " (weights are never downloaded)"
            )
        # Trials run in their own working directories: keep the path absolute.
        return str(path)

    @field_validator("factory")
    @classmethod
    def _factory_path(cls, factory: str | None) -> str | None:
        if factory is not None and not CALLABLE_PATH.fullmatch(factory):
            raise ValueError(f"write 'package.module:function', got {factory!r}")
        return factory

    @model_validator(mode="wrap")
    @classmethod
    def _defaults_of_the_network(cls, raw: Any, handler: Any) -> ModelConfig:
        if isinstance(raw, dict):
            if raw.get("factory") is not None and "backbone" not in raw:
                raw = {**raw, "backbone": "factory"}
            if isinstance(raw.get("groups"), list) and "num_groups" not in raw:
                raw = {**raw, "num_groups": len(raw["groups"])}
        config = handler(raw)
        if isinstance(raw, dict) and "num_groups" not in raw and config.backbone != "small_cnn":
            blocks = _block_count(config)
            if blocks is not None and blocks >= 2:
                config = config.model_copy(update={"num_groups": min(DEFAULT_NUM_GROUPS, blocks)})
        return config

    def spec(self, pretrained: PretrainSpec | None = None) -> ModelSpec:
        """The model as the trainables take it."""
        return ModelSpec(
            backbone=self.backbone,
            width=self.width,
            num_groups=self.num_groups,
            dropout=self.dropout,
            pretrained=pretrained if self.weights is None else None,
            weights=self.weights,
            strict_weights=self.strict_weights,
            factory=self.factory,
            factory_args=dict(self.factory_args),
            blocks=self.blocks,
            groups=tuple(self.groups) if self.groups is not None else None,
        )

    def check(self, tasks: tuple[str, ...], num_classes: int) -> None:
        """Build the backbone (weights file included) and the heads of ``tasks`` once.

        Raises:
            ValueError: one line naming the model field at fault.
        """
        if self.factory is not None and self.backbone != "factory":
            raise ValueError(
                f"model.backbone: is {self.backbone!r} but model.factory is set;"
                " leave backbone out (or set it to factory)"
            )
        if self.backbone == "factory" and self.factory is None:
            raise ValueError("model.factory: backbone factory needs 'package.module:function'")
        if self.backbone == "small_cnn":
            for field in ("blocks", "groups"):
                if getattr(self, field) is not None:
                    raise ValueError(
                        f"model.{field}: small_cnn has its own layer groups; {field} is for"
                        " torchvision and factory backbones"
                    )
            if self.weights is None:
                return
        # Forked: validating a file must not move the random numbers a run draws.
        with torch.random.fork_rng(devices=[]):
            try:
                backbone = build_backbone(self.spec())
                for task in tasks:
                    build_head(task, backbone, num_classes, self.dropout)
            except BackboneError as error:
                raise ValueError(str(error)) from None


def _block_count(model: ModelConfig) -> int | None:
    """Blocks ``model``'s network splits into, or None where it does not build (the
    model check reports why)."""
    try:
        with torch.random.fork_rng(devices=[]):
            return backbone_blocks(model.spec())
    except Exception:
        return None
