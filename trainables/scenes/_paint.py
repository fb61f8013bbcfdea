"""Painting one chunk of scenes: shape distances, which objects stay visible, the
background and its clutter, the objects back to front, and the masks and boxes."""

from __future__ import annotations

import math

import torch

from trainables.scenes._rules import (
    _MIN_VISIBLE_FRACTION,
    _NUM_CLUTTER_BLOBS,
    _NUM_CLUTTER_STROKES,
    _SIZE_MARGIN,
    MAX_OBJECTS,
)
from trainables.scenes._shapes import _SHAPES, _box


def _shape_distances(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, layout: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Signed distances in pixels (N, K, H, W) of every object, +inf for absent ones.

    Also returns each object's frame coordinates u and v, for shading.
    """
    centres = layout["centres"].flatten(0, 1)
    half_sides = layout["half_sides"].flatten()[:, None, None]
    cos = layout["rotations"].flatten().cos()[:, None, None]
    sin = layout["rotations"].flatten().sin()[:, None, None]
    offset_x, offset_y = x - centres[:, 0, None, None], y - centres[:, 1, None, None]
    u = (offset_x * cos + offset_y * sin) / half_sides
    v = (offset_y * cos - offset_x * sin) / half_sides
    classes = layout["classes"].flatten()
    distances = torch.empty_like(u)
    # Each class's formula runs on its own objects only, instead of every formula on all.
    for index, formula in enumerate(list(_SHAPES.values())[:num_classes]):
        members = (classes == index).nonzero().squeeze(1)
        distances[members] = formula(u[members], v[members])
    distances.mul_(half_sides).masked_fill_(~layout["active"].flatten()[:, None, None], math.inf)
    per_object = (*layout["classes"].shape, *distances.shape[1:])
    return distances.view(per_object), u.view(per_object), v.view(per_object)


def _keep_visible(inside: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Decides from the top down which objects stay: (N, K, H, W) -> (N, K) bool."""
    own_area = inside.sum(dim=(2, 3))
    covered = torch.zeros_like(inside[:, 0])
    kept = torch.zeros_like(active)
    for slot in range(MAX_OBJECTS):
        visible = (inside[:, slot] & ~covered).sum(dim=(1, 2))
        keep = active[:, slot] & (own_area[:, slot] > 0)
        keep &= visible >= _MIN_VISIBLE_FRACTION * own_area[:, slot]
        if slot > 0:
            # The primary object is on top, so its visible area is its whole area.
            keep &= _SIZE_MARGIN * visible <= own_area[:, 0]
        kept[:, slot] = keep
        covered |= inside[:, slot] & keep[:, None, None]
    return kept


def _boxes(
    owner: torch.Tensor, kept: torch.Tensor, classes: torch.Tensor, image_size: int
) -> torch.Tensor:
    """Boxes of every kept object's visible pixels, sorted by x1 then y1, padded with -1."""
    positions = torch.arange(image_size)
    rows = []
    for slot in range(MAX_OBJECTS):
        visible = owner == slot
        columns_used, rows_used = visible.any(dim=1), visible.any(dim=2)
        rows.append(
            torch.stack(
                [
                    torch.where(columns_used, positions, image_size).amin(dim=1),
                    torch.where(rows_used, positions, image_size).amin(dim=1),
                    torch.where(columns_used, positions + 1, 0).amax(dim=1),
                    torch.where(rows_used, positions + 1, 0).amax(dim=1),
                    classes[:, slot],
                ],
                dim=1,
            )
        )
    boxes = torch.where(kept[..., None], torch.stack(rows, dim=1), -1).float()
    # The slot order would reveal the primary object, so boxes are listed by position.
    order_key = torch.where(kept, boxes[..., 0] * image_size + boxes[..., 1], math.inf)
    order = order_key.argsort(dim=1, stable=True)
    return boxes.gather(1, order[..., None].expand_as(boxes))


def _per_pixel(values: torch.Tensor) -> torch.Tensor:
    """Adds height and width axes so that per-image values broadcast over (N, C, H, W)."""
    return values[..., None, None]


def _coverage(signed_distance: torch.Tensor) -> torch.Tensor:
    """Anti-aliased fraction of each pixel inside a shape, from distances in pixels."""
    return (0.5 - signed_distance[:, None]).clamp_(0.0, 1.0)


def _render_background(
    x: torch.Tensor, y: torch.Tensor, style: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Ramp, faint stripes and low-contrast clutter as (N, 3, H, W) floats in [0, 1]."""
    size = x.shape[-1]
    background = style["background"]
    ramp = _along(x, y, style["background_direction"], size).div_(size).add_(0.5).clamp_(0.0, 1.0)
    canvas = torch.lerp(_per_pixel(background[:, 0]), _per_pixel(background[:, 1]), ramp[:, None])
    period = style["texture_period"][:, None, None]
    stripes = _along(x, y, style["texture_direction"], size).mul_(2 * math.pi / period).sin_()
    canvas += stripes.mul_(style["texture_amplitude"][:, None, None])[:, None]

    background_mean = background.mean(dim=1, keepdim=True)
    stroke_colours = torch.lerp(
        background_mean, style["stroke_colours"], style["stroke_contrasts"][..., None]
    )
    for index in range(_NUM_CLUTTER_STROKES):
        centre = style["stroke_centres"][:, index, :, None, None]
        angle = style["stroke_angles"][:, index, None, None]
        offset_x, offset_y = x - centre[:, 0], y - centre[:, 1]
        distance = _box(
            offset_x * angle.cos() + offset_y * angle.sin(),
            offset_y * angle.cos() - offset_x * angle.sin(),
            style["stroke_half_lengths"][:, index, None, None],
            style["stroke_half_widths"][:, index, None, None],
        )
        canvas.lerp_(_per_pixel(stroke_colours[:, index]), _coverage(distance))
    blob_colours = torch.lerp(
        background_mean, style["blob_colours"], style["blob_contrasts"][..., None]
    )
    for index in range(_NUM_CLUTTER_BLOBS):
        centre = style["blob_centres"][:, index, :, None, None]
        distance = torch.hypot(x - centre[:, 0], y - centre[:, 1])
        distance -= style["blob_radii"][:, index, None, None]
        canvas.lerp_(_per_pixel(blob_colours[:, index]), _coverage(distance))
    return canvas


def _along(x: torch.Tensor, y: torch.Tensor, direction: torch.Tensor, size: int) -> torch.Tensor:
    """Signed pixel distance from the image centre along each image's direction: (N, H, W)."""
    cos, sin = direction.cos()[:, None, None], direction.sin()[:, None, None]
    return (x - size / 2) * cos + (y - size / 2) * sin


def _render_chunk(
    image_size: int,
    num_classes: int,
    layout: dict[str, torch.Tensor],
    style: dict[str, torch.Tensor],
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Renders one chunk of scenes back to front; returns images in [0, 1], masks and boxes."""
    coords = torch.arange(image_size, dtype=torch.float32) + 0.5
    x, y = coords.view(1, 1, -1), coords.view(1, -1, 1)
    distances, u, v = _shape_distances(x, y, num_classes, layout)
    inside = distances < 0
    kept = _keep_visible(inside, layout["active"])

    canvas = _render_background(x, y, style)
    # Slot of the topmost kept object at each pixel, -1 for background.
    owner = torch.full(inside[:, 0].shape, -1, dtype=torch.int64)
    for slot in reversed(range(MAX_OBJECTS)):
        drawn = kept[:, slot, None, None]
        owner.masked_fill_(inside[:, slot] & drawn, slot)
        direction = style["shading_directions"][:, slot, None, None]
        # A soft light ramp across the object keeps it from being one flat colour.
        shading = (u[:, slot] * direction.cos() + v[:, slot] * direction.sin()).mul_(
            style["shading_strengths"][:, slot, None, None]
        )
        colour = _per_pixel(style["object_colours"][:, slot]).add(shading[:, None]).clamp_(0, 1)
        canvas.lerp_(colour, _coverage(distances[:, slot]).mul_(drawn[:, None]))
    noise = torch.randn(canvas.shape, generator=generator)
    canvas.addcmul_(noise, _per_pixel(style["noise_std"][:, None])).clamp_(0.0, 1.0)

    classes = layout["classes"]
    owner_classes = classes.gather(1, owner.clamp_min(0).flatten(1)).view_as(owner)
    masks = torch.where(owner >= 0, owner_classes + 1, 0).to(torch.uint8)
    return canvas, masks, _boxes(owner, kept, classes, image_size)
