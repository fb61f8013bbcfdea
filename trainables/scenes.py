"""Synthetic multi-task scenes: shapes of up to ten classes on cluttered backgrounds.

Every scene holds 1 to `MAX_OBJECTS` objects. The first object of a scene, the *primary*
one, carries the image-level label: it is painted on top of the others and its visible
area is at least `_SIZE_MARGIN` times that of any other object, so the label is "the class
of the largest object" and has to be read from shape and size, never from one pixel.

Rules, in pixels of an image of side S:

- Size: an object's frame is a square of side 0.40-0.50 S (primary) or 0.25-0.32 S
  (others), rotated by up to 10 degrees; every shape reaches its frame's edge.
- Colour: drawn independently of class, as the background's grey level shifted by
  0.3-0.45 towards the far end of the grey scale plus a random tint and a soft shading ramp.
- Overlap: each secondary object takes the least overlapping of several random positions,
  judged on frames; then, from the top down, an object is dropped unless at least
  `_MIN_VISIBLE_FRACTION` of its own pixels stay visible and, for secondaries, its visible
  area respects `_SIZE_MARGIN`. Dropping only ever uncovers objects further down.
- Masks: a pixel belongs to the topmost kept object whose shape contains the pixel centre,
  i.e. which covers more than half of the anti-aliased pixel.
- Boxes: ``[x1, y1, x2, y2]`` are pixel-edge coordinates of the object's visible mask
  pixels: columns x1..x2-1 and rows y1..y2-1 hold all of them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch

__all__ = ["MAX_OBJECTS", "SCENE_CLASSES", "SCENE_GENERATOR_VERSION", "Scenes", "render_scenes"]

# Part of the scenes' cache file names: bump it whenever rendered scenes change.
SCENE_GENERATOR_VERSION = 1

MAX_OBJECTS = 3

# Frame sides as fractions of the image side. The gap between the two ranges makes the
# primary object clearly the largest, whichever shapes the scene draws.
_PRIMARY_SIDE = (0.40, 0.50)
_SECONDARY_SIDE = (0.25, 0.32)
_MAX_ROTATION = math.radians(10.0)
# How far a rotated frame reaches from its centre, in half-sides: cos + sin of the rotation.
_ROTATED_REACH = math.cos(_MAX_ROTATION) + math.sin(_MAX_ROTATION)
_PLACEMENT_CANDIDATES = 8
_MIN_VISIBLE_FRACTION = 0.7
_SIZE_MARGIN = 1.25

_BACKGROUND_GREY = (0.1, 0.9)
_BACKGROUND_CHROMA = 0.3
_BACKGROUND_RAMP = 0.2
_TEXTURE_AMPLITUDE = (0.0, 0.06)
_TEXTURE_PERIOD = (3.0, 8.0)
_NUM_CLUTTER_STROKES = 3
_NUM_CLUTTER_BLOBS = 2
# Clutter stays close to the background so that it never looks like an object.
_CLUTTER_CONTRAST = (0.05, 0.2)
_OBJECT_CONTRAST = (0.3, 0.45)
_OBJECT_CHROMA = 0.5
_MAX_SHADING = 0.12
_NOISE_STD = (0.01, 0.06)

# Bounds peak memory of the (objects, height, width) distance tensors.
_RENDER_CHUNK = 256


@dataclasses.dataclass(frozen=True, eq=False)
class Scenes:
    """Rendered scenes with their per-pixel and per-object targets.

    Attributes:
        images: uint8 (N, 3, H, W).
        masks: uint8 (N, H, W); 0 is background, c + 1 an object of class c.
        detections: float32 (N, MAX_OBJECTS, 5) rows ``[x1, y1, x2, y2, class]``, sorted by
            x1 then y1; rows without an object are all -1.
    """

    images: torch.Tensor
    masks: torch.Tensor
    detections: torch.Tensor


# ---------------------------------------------------------------------------
# Shapes: signed distances in frame units, the frame being [-1, 1]^2 with v pointing down.


def _box(
    u: torch.Tensor, v: torch.Tensor, half_u: float | torch.Tensor, half_v: float | torch.Tensor
) -> torch.Tensor:
    outside_u, outside_v = u.abs() - half_u, v.abs() - half_v
    outside = torch.hypot(outside_u.clamp_min(0.0), outside_v.clamp_min(0.0))
    return outside + torch.maximum(outside_u, outside_v).clamp_max(0.0)


def _disc(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.hypot(u, v) - 1.0


def _square(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # Hollow, so that its area stays close to the other shapes' and a disc is not a blurred square.
    return torch.maximum(_box(u, v, 1.0, 1.0), -_box(u, v, 0.55, 0.55))


def _triangle(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.maximum(v - 1.0, (2.0 * u.abs() - v - 1.0) / math.sqrt(5.0))


def _plus(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.minimum(_box(u, v, 1.0, 0.3), _box(u, v, 0.3, 1.0))


def _ring(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    radius = torch.hypot(u, v)
    return torch.maximum(radius - 1.0, 0.55 - radius)


def _diamond(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u.abs() + v.abs() - 1.0) / math.sqrt(2.0)


def _horizontal_bar(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return _box(u, v, 1.0, 0.5)


def _vertical_bar(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return _box(u, v, 0.5, 1.0)


def _l_shape(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.minimum(_box(u + 0.6, v, 0.4, 1.0), _box(u, v - 0.6, 1.0, 0.4))


def _x_cross(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    diagonals = torch.minimum((u - v).abs(), (u + v).abs()) / math.sqrt(2.0) - 0.25
    return torch.maximum(diagonals, _box(u, v, 1.0, 1.0))


_SHAPES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "disc": _disc,
    "square": _square,
    "triangle": _triangle,
    "plus": _plus,
    "ring": _ring,
    "diamond": _diamond,
    "horizontal_bar": _horizontal_bar,
    "vertical_bar": _vertical_bar,
    "l_shape": _l_shape,
    "x_cross": _x_cross,
}

# Class c is SCENE_CLASSES[c]; a spec with n classes uses the first n.
SCENE_CLASSES = tuple(_SHAPES)


# ---------------------------------------------------------------------------
# Rendering


def render_scenes(
    labels: torch.Tensor, image_size: int, num_classes: int, generator: torch.Generator
) -> Scenes:
    """Renders one scene per label, whose largest object has that label's class.

    Args:
        labels: int64 (N,) image-level classes in ``[0, num_classes)``.
        image_size: Height and width in pixels.
        num_classes: Number of classes the other objects are drawn from.
        generator: Source of every random draw, so that scenes are deterministic in its state.
    """
    count = labels.shape[0]
    # Every per-scene parameter is drawn up front, so scenes do not depend on the chunk size.
    num_objects = 1 + torch.randint(MAX_OBJECTS, (count,), generator=generator)
    classes = torch.randint(num_classes, (count, MAX_OBJECTS), generator=generator)
    classes[:, 0] = labels
    sides = torch.cat(
        [
            _uniform(generator, *_PRIMARY_SIDE, count, 1),
            _uniform(generator, *_SECONDARY_SIDE, count, MAX_OBJECTS - 1),
        ],
        dim=1,
    ).mul_(image_size)
    layout = {
        "active": torch.arange(MAX_OBJECTS) < num_objects[:, None],
        "classes": classes,
        "half_sides": sides / 2,
        "centres": _place(sides, image_size, generator),
        "rotations": _uniform(generator, -_MAX_ROTATION, _MAX_ROTATION, count, MAX_OBJECTS),
    }
    grey = _uniform(generator, *_BACKGROUND_GREY, count, 1)
    # Objects head for the far end of the grey scale, so their mean colour equals the
    # background's whatever their area, and colour tells nothing about class.
    away = torch.where(grey < 0.5, 1.0, -1.0)[:, None]
    contrast = _uniform(generator, *_OBJECT_CONTRAST, count, MAX_OBJECTS, 1)
    brightness = grey[:, None] + away * contrast
    tint = torch.rand(count, MAX_OBJECTS, 3, generator=generator) - 0.5
    style = {
        "background": _backgrounds(generator, grey),
        "background_direction": _uniform(generator, 0.0, 2 * math.pi, count),
        "texture_amplitude": _uniform(generator, *_TEXTURE_AMPLITUDE, count),
        "texture_period": _uniform(generator, *_TEXTURE_PERIOD, count),
        "texture_direction": _uniform(generator, 0.0, math.pi, count),
        "stroke_centres": _uniform(generator, 0.0, image_size, count, _NUM_CLUTTER_STROKES, 2),
        "stroke_half_lengths": _uniform(
            generator, 0.2 * image_size, 0.6 * image_size, count, _NUM_CLUTTER_STROKES
        ),
        "stroke_half_widths": _uniform(generator, 0.4, 1.2, count, _NUM_CLUTTER_STROKES),
        "stroke_angles": _uniform(generator, 0.0, math.pi, count, _NUM_CLUTTER_STROKES),
        "stroke_colours": torch.rand(count, _NUM_CLUTTER_STROKES, 3, generator=generator),
        "stroke_contrasts": _uniform(generator, *_CLUTTER_CONTRAST, count, _NUM_CLUTTER_STROKES),
        "blob_centres": _uniform(generator, 0.0, image_size, count, _NUM_CLUTTER_BLOBS, 2),
        "blob_radii": _uniform(
            generator, 0.1 * image_size, 0.3 * image_size, count, _NUM_CLUTTER_BLOBS
        ),
        "blob_colours": torch.rand(count, _NUM_CLUTTER_BLOBS, 3, generator=generator),
        "blob_contrasts": _uniform(generator, *_CLUTTER_CONTRAST, count, _NUM_CLUTTER_BLOBS),
        "object_colours": (brightness + _OBJECT_CHROMA * tint).clamp_(0.0, 1.0),
        "shading_directions": _uniform(generator, 0.0, 2 * math.pi, count, MAX_OBJECTS),
        "shading_strengths": _uniform(generator, 0.0, _MAX_SHADING, count, MAX_OBJECTS),
        "noise_std": _uniform(generator, *_NOISE_STD, count),
    }

    images = torch.empty(count, 3, image_size, image_size, dtype=torch.uint8)
    masks = torch.empty(count, image_size, image_size, dtype=torch.uint8)
    detections = torch.empty(count, MAX_OBJECTS, 5)
    for start in range(0, count, _RENDER_CHUNK):
        part = slice(start, min(start + _RENDER_CHUNK, count))
        chunk_layout = {name: value[part] for name, value in layout.items()}
        chunk_style = {name: value[part] for name, value in style.items()}
        pixels, masks[part], detections[part] = _render_chunk(
            image_size, num_classes, chunk_layout, chunk_style, generator
        )
        images[part] = pixels.mul_(255.0).round_().to(torch.uint8)
    return Scenes(images=images, masks=masks, detections=detections)


def _uniform(generator: torch.Generator, low: float, high: float, *shape: int) -> torch.Tensor:
    return low + (high - low) * torch.rand(*shape, generator=generator)


def _place(sides: torch.Tensor, image_size: int, generator: torch.Generator) -> torch.Tensor:
    """Picks object centres (N, K, 2) that keep objects inside the image and apart.

    The primary object goes anywhere; every further object takes, of a few random
    candidates, the one whose frame overlaps the frames before it least, as a fraction of
    the smaller frame.
    """
    count = sides.shape[0]
    reach = sides[..., None] / 2 * _ROTATED_REACH
    candidates = reach[:, :, None] + (image_size - 2 * reach[:, :, None]) * torch.rand(
        count, MAX_OBJECTS, _PLACEMENT_CANDIDATES, 2, generator=generator
    )
    half = sides / 2
    centres = [candidates[:, 0, 0]]
    for slot in range(1, MAX_OBJECTS):
        placed = torch.stack(centres, dim=1)[:, None]  # (N, 1, slot, 2)
        placed_half = half[:, None, :slot, None]
        own_half = half[:, slot, None, None, None]
        own = candidates[:, slot, :, None]  # (N, C, 1, 2)
        lower = torch.maximum(own - own_half, placed - placed_half)
        upper = torch.minimum(own + own_half, placed + placed_half)
        overlap = (upper - lower).clamp_min(0.0).prod(dim=-1)
        smaller_area = (2 * torch.minimum(own_half[..., 0], placed_half[..., 0])) ** 2
        worst = (overlap / smaller_area).amax(dim=-1)  # (N, C)
        best = worst.argmin(dim=1)
        centres.append(candidates[torch.arange(count), slot, best])
    return torch.stack(centres, dim=1)


def _backgrounds(generator: torch.Generator, grey: torch.Tensor) -> torch.Tensor:
    """Two muted colours (N, 2, 3) around each scene's grey level, the ends of a ramp."""
    count = grey.shape[0]
    tint = torch.rand(count, 2, 3, generator=generator) - 0.5
    spread = _uniform(generator, -_BACKGROUND_RAMP, _BACKGROUND_RAMP, count, 1, 1)
    ends = torch.tensor([-0.5, 0.5]).view(1, 2, 1) * spread
    return (grey[:, None] + ends + _BACKGROUND_CHROMA * tint).clamp_(0.0, 1.0)


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
