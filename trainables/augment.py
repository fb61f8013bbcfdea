"""Train-time augmentation on batches of tensors: random horizontal flips and resized crops.

Transforms are drawn per sample from the batch iterator's generator, so a run is
reproducible from its seed and a resumed run continues the same stream. Masks and
boxes move with their images, so multi-task data can be augmented too.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

__all__ = ["Augmentation", "augment_batch"]

# Aspect ratios a random resized crop may take, as torchvision's RandomResizedCrop.
_LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Which random transforms the training batches get.

    Attributes:
        hflip: Mirror each image left-right with probability 0.5.
        crop_scale: Smallest area fraction of a random resized crop (resized back to the
            image size); 1.0 turns cropping off.
    """

    hflip: bool = False
    crop_scale: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.crop_scale <= 1.0:
            raise ValueError(f"crop_scale must be in (0, 1], got {self.crop_scale}")

    @property
    def active(self) -> bool:
        return self.hflip or self.crop_scale < 1.0


def augment_batch(
    images: torch.Tensor,
    targets: dict[str, torch.Tensor],
    augmentation: Augmentation,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Returns transformed copies of a batch; the inputs are left untouched.

    Args:
        images: float (N, C, H, W).
        targets: As `Split.task_targets`: "cls" is kept, "seg" (N, H, W) and "det"
            (N, K, 5) pixel-edge boxes with -1 padding rows follow their images.
        augmentation: The transforms to draw.
        generator: Source of the random draws (None: torch's global generator).
    """
    count, _, height, width = images.shape
    # Drawn on the host, where the generator lives, then moved to the batch's device.
    flip = torch.zeros(count, dtype=torch.bool)
    if augmentation.hflip:
        flip = torch.rand(count, generator=generator) < 0.5
    if augmentation.crop_scale >= 1.0:
        if not bool(flip.any()):
            return images, targets
        return _flip(images, targets, flip.to(images.device), width)

    area = augmentation.crop_scale + (1.0 - augmentation.crop_scale) * torch.rand(
        count, generator=generator
    )
    log_ratio = _LOG_RATIO[0] + (_LOG_RATIO[1] - _LOG_RATIO[0]) * torch.rand(
        count, generator=generator
    )
    # Crop sides and offsets as fractions of the image side.
    crop_w = (area * log_ratio.exp()).sqrt().clamp(max=1.0)
    crop_h = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
    left = torch.rand(count, generator=generator) * (1.0 - crop_w)
    top = torch.rand(count, generator=generator) * (1.0 - crop_h)
    # One affine map from output to input coordinates in [-1, 1] does crop and flip at once.
    scale_x = torch.where(flip, -crop_w, crop_w)
    centre_x = 2.0 * left + crop_w - 1.0
    centre_y = 2.0 * top + crop_h - 1.0
    theta = torch.zeros(count, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = scale_x, centre_x
    theta[:, 1, 1], theta[:, 1, 2] = crop_h, centre_y
    theta = theta.to(images.device)
    grid = F.affine_grid(theta, [count, 1, height, width], align_corners=False)
    grid = grid.to(images.dtype)
    out_images = F.grid_sample(
        images, grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    out = dict(targets)
    if "seg" in targets:
        masks = targets["seg"][:, None].to(images.dtype)
        sampled = F.grid_sample(masks, grid, mode="nearest", align_corners=False)
        out["seg"] = sampled[:, 0].round().to(targets["seg"].dtype)
    if "det" in targets:
        map_x, map_y = theta[:, 0, [0, 2]].unbind(1), theta[:, 1, [1, 2]].unbind(1)
        out["det"] = _move_boxes(targets["det"], map_x, map_y, width, height)
    return out_images, out


def _flip(
    images: torch.Tensor, targets: dict[str, torch.Tensor], flip: torch.Tensor, width: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Exact mirroring of the flagged samples (no resampling)."""
    out = dict(targets)
    out_images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    if "seg" in targets:
        masks = targets["seg"]
        out["seg"] = torch.where(flip[:, None, None], masks.flip(-1), masks)
    if "det" in targets:
        ones = torch.ones(flip.shape, device=flip.device)
        scale_x = torch.where(flip, -ones, ones)
        out["det"] = _move_boxes(
            targets["det"],
            (scale_x, torch.zeros_like(ones)),
            (ones, torch.zeros_like(ones)),
            width,
            images.shape[2],
        )
    return out_images, out


def _move_boxes(
    boxes: torch.Tensor,
    map_x: tuple[torch.Tensor, torch.Tensor],
    map_y: tuple[torch.Tensor, torch.Tensor],
    width: int,
    height: int,
) -> torch.Tensor:
    """Maps pixel-edge boxes through ``input = scale * output + centre`` (normalised), clips
    them to the image and turns boxes left with no area into -1 padding rows."""

    def to_output(coords: torch.Tensor, mapping: tuple[torch.Tensor, torch.Tensor], side: int):
        scale, centre = (value[:, None] for value in mapping)
        normalised = (2.0 * coords / side - 1.0 - centre) / scale
        return ((normalised + 1.0) * side / 2.0).clamp(0.0, float(side))

    x_a, x_b = to_output(boxes[..., 0], map_x, width), to_output(boxes[..., 2], map_x, width)
    y_a, y_b = to_output(boxes[..., 1], map_y, height), to_output(boxes[..., 3], map_y, height)
    moved = torch.stack(
        [
            torch.minimum(x_a, x_b),
            torch.minimum(y_a, y_b),
            torch.maximum(x_a, x_b),
            torch.maximum(y_a, y_b),
            boxes[..., 4],
        ],
        dim=-1,
    )
    keep = (boxes[..., 4] >= 0) & (moved[..., 2] > moved[..., 0]) & (moved[..., 3] > moved[..., 1])
    return torch.where(keep[..., None], moved, torch.full_like(moved, -1.0)).to(boxes.dtype)
