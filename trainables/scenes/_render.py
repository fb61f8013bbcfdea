"""Rendering scenes: every per-scene draw up front, then painting chunk by chunk."""

from __future__ import annotations

import dataclasses
import math

import torch

from trainables.scenes._paint import _render_chunk
from trainables.scenes._rules import (
    _BACKGROUND_CHROMA,
    _BACKGROUND_GREY,
    _BACKGROUND_RAMP,
    _CLUTTER_CONTRAST,
    _MAX_ROTATION,
    _MAX_SHADING,
    _NOISE_STD,
    _NUM_CLUTTER_BLOBS,
    _NUM_CLUTTER_STROKES,
    _OBJECT_CHROMA,
    _OBJECT_CONTRAST,
    _PLACEMENT_CANDIDATES,
    _PRIMARY_SIDE,
    _RENDER_CHUNK,
    _ROTATED_REACH,
    _SECONDARY_SIDE,
    _TEXTURE_AMPLITUDE,
    _TEXTURE_PERIOD,
    MAX_OBJECTS,
)


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
