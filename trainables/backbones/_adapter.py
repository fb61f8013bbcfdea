"""The adapter the heads and the engine read: any network as a backbone with
``layer_groups``, ``forward_pyramid``, ``pyramid_channels``, ``pyramid_strides`` and
``out_features``.

The feature pyramid the dense heads read is the output of the last unit at each
stride (input pixels per cell), found with one dry forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import torch
from torch import nn

from trainables.backbones._errors import BackboneError
from trainables.backbones._groups import layer_groups
from trainables.callables import describe_error

__all__ = ["PROBE_SIZE", "GroupedBackbone", "adapt_backbone"]

#: Side of the zero image the dry forward pass runs on to measure strides.
PROBE_SIZE = 64


@torch.no_grad()
def _dry_run(
    run: Callable[[torch.Tensor], list[torch.Tensor]], module: nn.Module, in_channels: int
) -> list[torch.Tensor]:
    """Outputs of ``run`` on a zero image in eval mode; every module's mode is restored."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        return run(torch.zeros(1, in_channels, PROBE_SIZE, PROBE_SIZE))
    finally:
        for m, training in modes:
            m.training = training


class GroupedBackbone(nn.Module):
    """Any convolutional network as the heads and the engine see a backbone.

    Attributes:
        layer_groups: Ordered groups, input side first; the engine freezes them by index.
        pyramid_channels, pyramid_strides: Channels and stride of every pyramid map.
        out_features: Channels of the last map (the classifier's input).
    """

    def __init__(self, groups: nn.ModuleList, in_channels: int = 3) -> None:
        super().__init__()
        self.layer_groups = groups
        self._level_units: list[int] = []

        def every_unit(images: torch.Tensor) -> list[torch.Tensor]:
            maps = []
            for unit in self._units():
                images = unit(images)
                maps.append(images)
            return maps

        try:
            maps = _dry_run(every_unit, self, in_channels)
        except Exception as error:
            raise BackboneError(
                f"model: running the blocks in sequence fails ({describe_error(error)}); name"
                " them with model.blocks or model.groups, or give the network its own"
                " layer_groups and forward_pyramid"
            ) from None
        paths = [path for group in groups for path in group.paths]
        for path, features in zip(paths, maps, strict=True):
            if features.dim() != 4:
                raise BackboneError(
                    f"model: block {path!r} gives a {features.dim()}-d output, not an"
                    " (N, C, H, W) feature map; name the feature blocks with model.blocks"
                )
        strides = [max(PROBE_SIZE // features.shape[-1], 1) for features in maps]
        last_of_stride = {stride: index for index, stride in enumerate(strides)}
        self._level_units = sorted(last_of_stride.values())
        self.pyramid_channels = [maps[i].shape[1] for i in self._level_units]
        self.pyramid_strides = [strides[i] for i in self._level_units]
        self.out_features = self.pyramid_channels[-1]

    def _units(self) -> Iterator[nn.Module]:
        for group in self.layer_groups:
            yield from group

    def forward_pyramid(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The last map at each stride, input side first."""
        levels = iter(self._level_units)
        wanted = next(levels)
        maps = []
        for index, unit in enumerate(self._units()):
            images = unit(images)
            if index == wanted:
                maps.append(images)
                wanted = next(levels, -1)
        return maps

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Globally pooled features, shape (N, out_features)."""
        for unit in self._units():
            images = unit(images)
        return images.mean(dim=(2, 3))


def _check_native(module: nn.Module, in_channels: int) -> nn.Module:
    """A module with its own ``layer_groups`` and ``forward_pyramid``, completed with
    the pyramid's channels and strides when it does not give them."""
    in_groups = {id(p) for group in module.layer_groups for p in group.parameters()}
    outside = [name for name, p in module.named_parameters() if id(p) not in in_groups]
    if outside:
        raise BackboneError(
            f"model.factory: parameters outside layer_groups would never train: {outside[:3]}"
        )
    if not hasattr(module, "pyramid_channels") or not hasattr(module, "pyramid_strides"):
        try:
            maps = _dry_run(module.forward_pyramid, module, in_channels)
        except Exception as error:
            raise BackboneError(
                f"model.factory: forward_pyramid fails on a {PROBE_SIZE}x{PROBE_SIZE} image"
                f" ({describe_error(error)})"
            ) from None
        module.pyramid_channels = [m.shape[1] for m in maps]
        module.pyramid_strides = [max(PROBE_SIZE // m.shape[-1], 1) for m in maps]
    if not hasattr(module, "out_features"):
        module.out_features = module.pyramid_channels[-1]
    return module


def adapt_backbone(
    module: nn.Module,
    num_groups: int | None = None,
    *,
    blocks: str | None = None,
    groups: Sequence[str] | None = None,
    balance: Literal["blocks", "params"] = "blocks",
    in_channels: int = 3,
) -> nn.Module:
    """``module`` as a backbone: with ``layer_groups``, ``forward_pyramid``,
    ``pyramid_channels``, ``pyramid_strides`` and ``out_features``.

    A module that has ``layer_groups`` and ``forward_pyramid`` already is kept as it
    is (its group count is fixed); any other is split by :func:`layer_groups` into a
    :class:`GroupedBackbone`, dropping its classifier.
    """
    if hasattr(module, "layer_groups") and hasattr(module, "forward_pyramid"):
        if blocks is not None or groups is not None:
            raise BackboneError(
                "model.groups: the model has its own layer_groups; leave groups and blocks out"
            )
        count = len(module.layer_groups)
        if num_groups is not None and num_groups != count:
            raise BackboneError(
                f"model.num_groups: the model has its own {count} layer groups;"
                f" set it to {count} or leave it out"
            )
        return _check_native(module, in_channels)
    split = layer_groups(module, num_groups, blocks=blocks, groups=groups, balance=balance)
    return GroupedBackbone(split, in_channels)
