"""Task losses: classification, segmentation and CenterNet detection.

Targets follow the synthetic scene data: ``cls`` int64 (N,); ``seg`` int64 (N, H, W)
with 0 = background and ``c + 1`` for object class ``c``; ``det`` float (N, K, 5)
rows ``[x1, y1, x2, y2, class]`` in input pixels (x2, y2 exclusive), padding rows -1.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

__all__ = [
    "TASKS",
    "CenterNetTargets",
    "centernet_targets",
    "classification_loss",
    "detection_loss",
    "gaussian_radius",
    "segmentation_loss",
    "task_loss",
]

TASKS = ("cls", "seg", "det")

#: CenterNet's weights of the size and offset L1 terms against the heatmap loss.
SIZE_WEIGHT = 0.1
OFFSET_WEIGHT = 1.0


def _focal_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, label_smoothing: float, focal_gamma: float
) -> torch.Tensor:
    """Mean of ``(1 - p_t) ** gamma * CE`` over every element; classes on dim 1."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if focal_gamma < 0.0:
        raise ValueError(f"focal_gamma must be >= 0, got {focal_gamma}")
    logits = logits.float()
    loss = F.cross_entropy(logits, target, reduction="none", label_smoothing=label_smoothing)
    if focal_gamma > 0.0:
        # p_t is the model's probability of the true class, not of the smoothed target.
        p_true = (-F.cross_entropy(logits, target, reduction="none")).exp()
        loss = (1.0 - p_true) ** focal_gamma * loss
    return loss.mean()


def classification_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
    focal_gamma: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy of (N, C) logits, or its focal variant when ``focal_gamma > 0``.

    Args:
        logits: Class logits, (N, C).
        labels: True classes, (N,).
        label_smoothing: Mass spread uniformly over all classes, as in PyTorch.
        focal_gamma: Focusing exponent of ``(1 - p_t) ** gamma``; 0 is plain CE.

    Returns:
        The mean over samples.
    """
    return _focal_cross_entropy(logits, labels, label_smoothing, focal_gamma)


def segmentation_loss(
    logits: torch.Tensor,
    masks: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
    focal_gamma: float = 0.0,
) -> torch.Tensor:
    """Per-pixel :func:`classification_loss` of (N, C + 1, H, W) logits, mean over pixels."""
    return _focal_cross_entropy(logits, masks, label_smoothing, focal_gamma)


@dataclasses.dataclass(frozen=True)
class CenterNetTargets:
    """What a CenterNet head should output for a batch of boxes.

    Attributes:
        heatmap: (N, C, h, w), 1 at object centre cells, Gaussian falloff around them.
        size: (N, K, 2) box width and height in output cells.
        offset: (N, K, 2) sub-cell x, y offset of the centre from its cell's corner.
        index: (N, K) flat index ``y * w + x`` of the centre cell (0 for padding).
        mask: (N, K) true for real objects, false for padding rows.
    """

    heatmap: torch.Tensor
    size: torch.Tensor
    offset: torch.Tensor
    index: torch.Tensor
    mask: torch.Tensor


def gaussian_radius(
    height: torch.Tensor, width: torch.Tensor, min_overlap: float = 0.7
) -> torch.Tensor:
    """Heatmap splat radius for boxes of the given size (in output cells).

    The smallest of the three corner-displacement bounds that keep a box's IoU with
    the true box at ``min_overlap``, computed exactly as the CenterNet and CornerNet
    reference code does (its roots are not divided by ``2a``), since CenterNet's
    published settings were tuned with these radii.
    """
    area = height * width
    b1 = height + width
    c1 = area * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + (b1**2 - 4 * c1).sqrt()) / 2
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * area
    r2 = (b2 + (b2**2 - 16 * c2).sqrt()) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * area
    r3 = (b3 + (b3**2 - 4 * a3 * c3).sqrt()) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def centernet_targets(
    det: torch.Tensor, num_classes: int, output_size: tuple[int, int], stride: int = 4
) -> CenterNetTargets:
    """Encode padded boxes as CenterNet heatmap, size and offset targets.

    Each object marks the cell holding its centre with a Gaussian of radius
    :func:`gaussian_radius` (sigma = diameter / 6); overlapping splats of one class
    keep the maximum, as in "Objects as Points".

    Args:
        det: (N, K, 5) rows ``[x1, y1, x2, y2, class]`` in input pixels, padding -1.
        num_classes: Heatmap channels.
        output_size: (h, w) of the head's output.
        stride: Input pixels per output cell.
    """
    det = det.float()
    batch, _, _ = det.shape
    height, width = int(output_size[0]), int(output_size[1])
    mask = det[..., 4] >= 0
    x1, y1, x2, y2 = (det[..., i] / stride for i in range(4))
    box_width, box_height = x2 - x1, y2 - y1
    centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
    cell_x = centre_x.floor().clamp(0, width - 1)
    cell_y = centre_y.floor().clamp(0, height - 1)
    valid = mask.unsqueeze(-1)
    size = torch.stack([box_width, box_height], -1) * valid
    offset = torch.stack([centre_x - cell_x, centre_y - cell_y], -1) * valid
    index = (cell_y * width + cell_x).long() * mask

    radius = gaussian_radius(box_height[mask].ceil(), box_width[mask].ceil()).floor().clamp(min=0)
    sigma = (2 * radius + 1) / 6
    dy = torch.arange(height, device=det.device).view(1, -1, 1) - cell_y[mask].view(-1, 1, 1)
    dx = torch.arange(width, device=det.device).view(1, 1, -1) - cell_x[mask].view(-1, 1, 1)
    window = (dx.abs() <= radius.view(-1, 1, 1)) & (dy.abs() <= radius.view(-1, 1, 1))
    splats = (-(dx**2 + dy**2) / (2 * sigma.view(-1, 1, 1) ** 2)).exp() * window
    image = torch.arange(batch, device=det.device).view(-1, 1).expand_as(mask)[mask]
    channel = image * num_classes + det[..., 4][mask].long()
    heatmap = torch.zeros(batch * num_classes, height * width, device=det.device)
    heatmap.scatter_reduce_(
        0, channel.view(-1, 1).expand(-1, height * width), splats.flatten(1), "amax"
    )
    return CenterNetTargets(
        heatmap=heatmap.view(batch, num_classes, height, width),
        size=size,
        offset=offset,
        index=index,
        mask=mask,
    )


def _heatmap_focal_loss(logits: torch.Tensor, heatmap: torch.Tensor) -> torch.Tensor:
    """Penalty-reduced pixel-wise focal loss (alpha 2, beta 4) over the number of centres."""
    positive = heatmap.eq(1)
    probability = logits.sigmoid()
    # logsigmoid instead of log(sigmoid) keeps confident cells finite without clamping.
    positive_loss = F.logsigmoid(logits) * (1 - probability) ** 2
    negative_loss = F.logsigmoid(-logits) * probability**2 * (1 - heatmap) ** 4
    total = torch.where(positive, positive_loss, negative_loss).sum()
    return -total / positive.sum().clamp(min=1)


def _masked_l1(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the (N, K, 2) entries of real objects; 0 with none."""
    weights = mask.unsqueeze(-1).float()
    return ((prediction - target).abs() * weights).sum() / (2 * weights.sum()).clamp(min=1)


def detection_loss(
    output: torch.Tensor, det: torch.Tensor, num_classes: int, stride: int = 4
) -> torch.Tensor:
    """CenterNet loss: heatmap focal loss + 0.1 * size L1 + 1 * offset L1 at centre cells.

    Args:
        output: (N, num_classes + 4, h, w) detection head output.
        det: (N, K, 5) padded boxes, see :func:`centernet_targets`.
        num_classes: Object classes.
        stride: Input pixels per output cell.
    """
    output = output.float()
    targets = centernet_targets(det, num_classes, output.shape[-2:], stride)
    heatmap_loss = _heatmap_focal_loss(output[:, :num_classes], targets.heatmap)
    regression = output[:, num_classes : num_classes + 4].flatten(2)
    at_centres = regression.gather(2, targets.index.unsqueeze(1).expand(-1, 4, -1))
    at_centres = at_centres.transpose(1, 2)
    size_loss = _masked_l1(at_centres[..., :2], targets.size, targets.mask)
    offset_loss = _masked_l1(at_centres[..., 2:], targets.offset, targets.mask)
    return heatmap_loss + SIZE_WEIGHT * size_loss + OFFSET_WEIGHT * offset_loss


def task_loss(
    task: str,
    output: torch.Tensor,
    target: torch.Tensor,
    *,
    num_classes: int,
    label_smoothing: float = 0.0,
    focal_gamma: float = 0.0,
) -> torch.Tensor:
    """The loss of one task's head output; smoothing and focal apply to cls and seg.

    Args:
        task: One of ``"cls"``, ``"seg"``, ``"det"``.
        output: That task's head output.
        target: That task's target.
        num_classes: Object classes (detection heatmap channels).
        label_smoothing: See :func:`classification_loss`.
        focal_gamma: See :func:`classification_loss`.
    """
    if task == "cls":
        return classification_loss(
            output, target, label_smoothing=label_smoothing, focal_gamma=focal_gamma
        )
    if task == "seg":
        return segmentation_loss(
            output, target, label_smoothing=label_smoothing, focal_gamma=focal_gamma
        )
    if task == "det":
        return detection_loss(output, target, num_classes)
    raise ValueError(f"unknown task {task!r}; use one of {TASKS}")
