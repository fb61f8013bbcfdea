"""Dense task heads on a backbone's feature pyramid, and CenterNet decoding.

Both heads read ``pyramid``: the feature map of every backbone layer group, input
side first, described by ``channels`` and ``strides`` (input pixels per cell).

The detection head's output is one tensor of ``num_classes + 4`` channels at
``1 / stride`` of the input resolution:

- ``[0:C]``: class heatmap logits (sigmoid gives the probability of an object
  centre in that cell);
- ``[C:C+2]``: box width and height in output cells, predicted raw (not log), as
  CenterNet does, so that its L1 weight of 0.1 keeps its meaning;
- ``[C+2:C+4]``: sub-cell x and y offset of the centre from the cell's corner, raw.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "HEATMAP_PRIOR",
    "DetectionHead",
    "FeaturePyramidFusion",
    "SegmentationHead",
    "decode_detections",
]

#: Initial object probability of every heatmap cell: starting near the true (low)
#: object rate keeps the focal loss of the many background cells from swamping
#: the first steps ("Objects as Points", after RetinaNet).
HEATMAP_PRIOR = 0.1


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class FeaturePyramidFusion(nn.Module):
    """Top-down fusion of a feature pyramid into one map at ``out_stride`` (FPN style).

    Only the last group of each stride is read: groups of equal stride run one after
    the other, so the last one already carries what the earlier ones computed. Going
    from the deepest level up, the running map is upsampled to the next level's
    resolution, added to that level's 1x1 projection and refined by a 3x3 conv. Levels
    finer than ``out_stride`` are average-pooled down to it first, so their detail
    still reaches a coarse output.
    """

    def __init__(
        self, channels: list[int], strides: list[int], out_channels: int, out_stride: int
    ) -> None:
        super().__init__()
        if len(channels) != len(strides) or not channels:
            raise ValueError("channels and strides must be non-empty and of equal length")
        last_of_stride = {stride: index for index, stride in enumerate(strides)}
        #: Pyramid indices read, deepest first.
        self.levels = sorted(last_of_stride.values(), key=lambda i: strides[i], reverse=True)
        if any(out_stride % strides[i] for i in self.levels if strides[i] < out_stride):
            raise ValueError(
                f"strides finer than out_stride {out_stride} must divide it: {strides}"
            )
        self.pool_factors = [max(out_stride // strides[i], 1) for i in self.levels]
        self.lateral = nn.ModuleList(
            nn.Conv2d(channels[i], out_channels, 1, bias=False) for i in self.levels
        )
        self.refine = nn.ModuleList(_conv_bn_relu(out_channels, out_channels) for _ in self.levels)

    def forward(self, pyramid: list[torch.Tensor]) -> torch.Tensor:
        fused: torch.Tensor | None = None
        for level, factor, lateral, refine in zip(
            self.levels, self.pool_factors, self.lateral, self.refine, strict=True
        ):
            features = pyramid[level]
            if factor > 1:
                features = F.avg_pool2d(features, factor)
            features = lateral(features)
            if fused is not None:
                if fused.shape[-2:] != features.shape[-2:]:
                    fused = F.interpolate(
                        fused, size=features.shape[-2:], mode="bilinear", align_corners=False
                    )
                features = features + fused
            fused = refine(features)
        assert fused is not None
        return fused


class SegmentationHead(nn.Module):
    """Per-pixel logits over ``num_classes + 1`` classes (0 = background) at input size.

    Args:
        channels: Output channels of every pyramid level.
        strides: Stride of every pyramid level.
        num_classes: Object classes; the background class is added.
        dropout: Dropout before the per-pixel classifier.
        decoder_channels: Width of the decoder; defaults to twice the shallowest
            level's channels.
    """

    def __init__(
        self,
        channels: list[int],
        strides: list[int],
        num_classes: int,
        dropout: float = 0.0,
        *,
        decoder_channels: int | None = None,
    ) -> None:
        super().__init__()
        width = decoder_channels or 2 * channels[0]
        self.input_stride = min(strides)
        self.fusion = FeaturePyramidFusion(channels, strides, width, self.input_stride)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(width, num_classes + 1, 1)

    def forward(self, pyramid: list[torch.Tensor]) -> torch.Tensor:
        logits = self.classifier(self.dropout(self.fusion(pyramid)))
        if self.input_stride > 1:
            logits = F.interpolate(
                logits, scale_factor=self.input_stride, mode="bilinear", align_corners=False
            )
        return logits


class DetectionHead(nn.Module):
    """Anchor-free CenterNet head: heatmap, size and offset maps at ``1 / stride``.

    Args:
        channels: Output channels of every pyramid level.
        strides: Stride of every pyramid level.
        num_classes: Object classes (heatmap channels).
        stride: Input pixels per output cell.
        head_channels: Width of the fused map and of each branch; defaults to the
            deepest level's channels.
    """

    def __init__(
        self,
        channels: list[int],
        strides: list[int],
        num_classes: int,
        stride: int = 4,
        *,
        head_channels: int | None = None,
    ) -> None:
        super().__init__()
        width = head_channels or channels[-1]
        self.num_classes = num_classes
        self.stride = stride
        self.fusion = FeaturePyramidFusion(channels, strides, width, stride)
        self.heatmap = self._branch(width, num_classes)
        self.size = self._branch(width, 2)
        self.offset = self._branch(width, 2)
        nn.init.constant_(self.heatmap[-1].bias, math.log(HEATMAP_PRIOR / (1 - HEATMAP_PRIOR)))

    @staticmethod
    def _branch(width: int, out_channels: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, out_channels, 1),
        )

    def forward(self, pyramid: list[torch.Tensor]) -> torch.Tensor:
        features = self.fusion(pyramid)
        return torch.cat([self.heatmap(features), self.size(features), self.offset(features)], 1)


def decode_detections(
    output: torch.Tensor, num_classes: int, stride: int = 4, max_detections: int = 20
) -> list[dict[str, torch.Tensor]]:
    """Boxes from a :class:`DetectionHead` output, CenterNet's way.

    A cell is a detection where its sigmoid score is the maximum of its 3x3
    neighbourhood (this replaces box NMS); the ``max_detections`` best over all
    classes are kept, with no score threshold, so ranking metrics see them all.

    Returns:
        Per image: ``boxes`` (D, 4) xyxy in input pixels, ``scores`` (D,), ``labels`` (D,).
    """
    batch, _, height, width = output.shape
    heat = output[:, :num_classes].float().sigmoid()
    peaks = F.max_pool2d(heat, 3, stride=1, padding=1) == heat
    scores, flat = (heat * peaks).flatten(1).topk(min(max_detections, heat[0].numel()), dim=1)
    labels = flat // (height * width)
    cells = flat % (height * width)
    ys = (cells // width).float()
    xs = (cells % width).float()
    regression = output[:, num_classes : num_classes + 4].float().flatten(2)
    gathered = regression.gather(2, cells.unsqueeze(1).expand(-1, 4, -1))
    # A negative raw size is not a box; clamp it to an empty one.
    half_size = gathered[:, :2].transpose(1, 2).clamp(min=0) / 2
    centre = torch.stack([xs, ys], 2) + gathered[:, 2:].transpose(1, 2)
    boxes = torch.cat([centre - half_size, centre + half_size], 2) * stride
    return [{"boxes": boxes[i], "scores": scores[i], "labels": labels[i]} for i in range(batch)]
