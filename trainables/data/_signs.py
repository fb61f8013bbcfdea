"""The synthetic sign renderer: hands of 36 shapes, and the source task's glyphs and stars.

The target task stands in for a 36-class sign-language image set; the source task is
a different labelling of the same visual vocabulary, used to pretrain backbones. Both
are drawn as anti-aliased strokes and blobs on cluttered backgrounds, in chunks, so that
a large set is rendered straight into the store without being held whole.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from trainables.data._sign_templates import _class_templates, _stack_templates, num_class_templates

__all__ = ["GENERATOR_VERSION", "num_class_templates", "render_signs"]

# Part of the signs' and source's cache file names: bump it whenever their images change.
# Scenes have their own, `SCENE_GENERATOR_VERSION`.
GENERATOR_VERSION = 1

# Bounds peak memory of the (images, shapes, height, width) distance tensors: 256 images
# up to 64 px, fewer above, so a chunk never holds more pixels than 256 images of 64 px.
_RENDER_CHUNK = 256
_RENDER_CHUNK_PIXELS = _RENDER_CHUNK * 64 * 64

# Pixel centres as a (1, W) row of x and an (H, 1) column of y.
_PixelGrid = tuple[torch.Tensor, torch.Tensor]

# Difficulty knobs, in the [-1, 1] image coordinate frame unless noted.
_MAX_ROTATION = math.radians(10.0)
_SCALE_RANGE = (0.9, 1.1)
_MAX_SHIFT = 0.1
_THICKNESS_RANGE = (0.75, 1.3)
_NUM_DISTRACTOR_STROKES = 3
_NUM_DISTRACTOR_BLOBS = 2
_FRONT_DISTRACTOR_PROB = 0.2
_NOISE_STD_RANGE = (0.01, 0.05)
# Distractor colours are pulled towards the background by this much (0: invisible, 1: any colour),
# so that clutter stays less salient than the hand, as in photographs of a signer.
_CLUTTER_CONTRAST_RANGE = (0.1, 0.4)
_SKIN_TONE_PROB = 0.85
_BACKGROUND_CHROMA = 0.3


# ---------------------------------------------------------------------------
# Rendering


def _uniform(generator: torch.Generator, low: float, high: float, *shape: int) -> torch.Tensor:
    return low + (high - low) * torch.rand(*shape, generator=generator)


def _random_colours(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, 3, generator=generator)


def _background_colours(generator: torch.Generator, *shape: int) -> torch.Tensor:
    """Muted colours: a grey level plus a limited tint, like walls and rooms behind a signer."""
    grey = torch.rand(*shape, 1, generator=generator)
    tint = torch.rand(*shape, 3, generator=generator) - 0.5
    return (grey + _BACKGROUND_CHROMA * tint).clamp(0.0, 1.0)


def _hand_colours(generator: torch.Generator, count: int) -> torch.Tensor:
    """Mostly skin tones of varying darkness, otherwise any colour (gloves, odd lighting)."""
    brightness = _uniform(generator, 0.25, 1.0, count, 1)
    skin = brightness * torch.tensor([0.95, 0.72, 0.58]) + _uniform(
        generator, -0.08, 0.08, count, 3
    )
    other = _random_colours(generator, count)
    is_skin = torch.rand(count, 1, generator=generator) < _SKIN_TONE_PROB
    return torch.where(is_skin, skin, other).clamp(0.0, 1.0)


def render_signs(
    kind: str,
    num_classes: int,
    labels: torch.Tensor,
    generator: torch.Generator,
    out: np.ndarray,
) -> None:
    """Renders one posed template of `kind` per label on a cluttered background.

    Args:
        kind: "synthetic_signs" or "synthetic_source".
        num_classes: The first `num_classes` templates of the kind are used.
        labels: int64 (N,) classes.
        generator: Source of every random draw.
        out: uint8 (N, 3, S, S), written chunk by chunk (a store's mapped array).
    """
    count, image_size = labels.shape[0], out.shape[-1]
    templates = _class_templates(kind)[:num_classes]
    segments, half_widths, ellipses = _stack_templates(templates)

    # Every per-image parameter is drawn up front, so images do not depend on the chunk size.
    pose = {
        "rotation": _uniform(generator, -_MAX_ROTATION, _MAX_ROTATION, count),
        "scale": _uniform(generator, *_SCALE_RANGE, count),
        "shift": _uniform(generator, -_MAX_SHIFT, _MAX_SHIFT, count, 2),
        "thickness": _uniform(generator, *_THICKNESS_RANGE, count),
    }
    style = {
        "hand_colour": _hand_colours(generator, count),
        "light_direction": _uniform(generator, 0.0, 2 * math.pi, count),
        "light_strength": _uniform(generator, 0.0, 0.35, count),
        "background_colours": _background_colours(generator, count, 2),
        "background_direction": _uniform(generator, 0.0, 2 * math.pi, count),
        "stroke_ends": _uniform(generator, -1.1, 1.1, count, _NUM_DISTRACTOR_STROKES, 2, 2),
        "stroke_half_widths": _uniform(generator, 0.04, 0.1, count, _NUM_DISTRACTOR_STROKES),
        "stroke_colours": _random_colours(generator, count, _NUM_DISTRACTOR_STROKES),
        "stroke_contrasts": _uniform(
            generator, *_CLUTTER_CONTRAST_RANGE, count, _NUM_DISTRACTOR_STROKES, 1
        ),
        "blob_centres": _uniform(generator, -1.0, 1.0, count, _NUM_DISTRACTOR_BLOBS, 2),
        "blob_axes": _uniform(generator, 0.08, 0.3, count, _NUM_DISTRACTOR_BLOBS, 2),
        "blob_angles": _uniform(generator, 0.0, math.pi, count, _NUM_DISTRACTOR_BLOBS),
        "blob_colours": _random_colours(generator, count, _NUM_DISTRACTOR_BLOBS),
        "blob_contrasts": _uniform(
            generator, *_CLUTTER_CONTRAST_RANGE, count, _NUM_DISTRACTOR_BLOBS, 1
        ),
        "front_ends": _uniform(generator, -1.1, 1.1, count, 2, 2),
        "front_half_width": _uniform(generator, 0.03, 0.07, count),
        "front_colour": _random_colours(generator, count),
        "has_front": (torch.rand(count, generator=generator) < _FRONT_DISTRACTOR_PROB).float(),
        "noise_std": _uniform(generator, *_NOISE_STD_RANGE, count),
    }

    grid = _pixel_grid(image_size)
    pixel = 2.0 / image_size
    chunk = max(1, min(_RENDER_CHUNK, _RENDER_CHUNK_PIXELS // image_size**2))
    for start in range(0, count, chunk):
        part = slice(start, min(start + chunk, count))
        chunk_labels = labels[part]
        hand = _posed_shapes(
            segments[chunk_labels],
            half_widths[chunk_labels],
            ellipses[chunk_labels],
            {name: value[part] for name, value in pose.items()},
        )
        chunk_style = {name: value[part] for name, value in style.items()}
        pixels = _render_chunk(grid, pixel, hand, chunk_style, generator)
        out[part] = pixels.mul_(255.0).round_().to(torch.uint8).numpy()


def _pixel_grid(size: int) -> _PixelGrid:
    """Pixel centres in [-1, 1] as a (1, W) row of x and an (H, 1) column of y, y pointing down.

    Keeping the axes separate lets per-shape terms broadcast, halving full-size tensor work.
    """
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) * (2.0 / size) - 1.0
    return coords[None, :], coords[:, None]


def _posed_shapes(
    segments: torch.Tensor,
    half_widths: torch.Tensor,
    ellipses: torch.Tensor,
    pose: dict[str, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Applies each image's rotation, scale, shift and stroke thickness to its template."""
    cos, sin = pose["rotation"].cos(), pose["rotation"].sin()
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    linear = rotation * pose["scale"][:, None, None]
    shift = pose["shift"]
    posed_segments = torch.einsum("nij,nskj->nski", linear, segments) + shift[:, None, None, :]
    stroke_scale = (pose["scale"] * pose["thickness"])[:, None]
    # Padding keeps its negative half-width, so it stays invisible after scaling.
    posed_half_widths = torch.where(half_widths > 0, half_widths * stroke_scale, half_widths)
    centres = torch.einsum("nij,nej->nei", linear, ellipses[..., :2]) + shift[:, None, :]
    axes = ellipses[..., 2:4] * pose["scale"][:, None, None]
    angles = ellipses[..., 4] + pose["rotation"][:, None]
    posed_ellipses = torch.cat([centres, axes, angles[..., None]], dim=-1)
    return posed_segments, posed_half_widths, posed_ellipses


def _segment_distance(grid: _PixelGrid, segments: torch.Tensor) -> torch.Tensor:
    """Distance from every pixel to every segment: (N, S, 2, 2) -> (N, S, H, W)."""
    x, y = grid
    start_x, start_y = segments[..., 0, 0, None, None], segments[..., 0, 1, None, None]
    along_x = segments[..., 1, 0, None, None] - start_x
    along_y = segments[..., 1, 1, None, None] - start_y
    inverse_length_sq = 1.0 / (along_x * along_x + along_y * along_y).clamp_min(1e-8)
    offset_x, offset_y = x - start_x, y - start_y
    # Position of the closest point along the segment, 0 at its start and 1 at its end.
    t = offset_x * (along_x * inverse_length_sq) + offset_y * (along_y * inverse_length_sq)
    t.clamp_(0.0, 1.0)
    return torch.hypot(
        torch.addcmul(offset_x, t, along_x, value=-1), torch.addcmul(offset_y, t, along_y, value=-1)
    )


def _ellipse_signed_distance(grid: _PixelGrid, ellipses: torch.Tensor) -> torch.Tensor:
    """Approximate signed distance to ellipse outlines: (N, E, 5) -> (N, E, H, W)."""
    x, y = grid
    offset_x, offset_y = x - ellipses[..., 0, None, None], y - ellipses[..., 1, None, None]
    cos, sin = ellipses[..., 4, None, None].cos(), ellipses[..., 4, None, None].sin()
    inverse_ax, inverse_ay = 1.0 / ellipses[..., 2, None, None], 1.0 / ellipses[..., 3, None, None]
    along = offset_x * (cos * inverse_ax) + offset_y * (sin * inverse_ax)
    across = offset_y * (cos * inverse_ay) - offset_x * (sin * inverse_ay)
    min_axis = ellipses[..., 2:4].amin(dim=-1)[..., None, None]
    return torch.hypot(along, across).sub_(1.0).mul_(min_axis)


def _coverage(signed_distance: torch.Tensor, pixel: float) -> torch.Tensor:
    """Anti-aliased fraction of each pixel inside a shape: (N, H, W) -> (N, 1, H, W)."""
    return (0.5 - signed_distance[:, None] / pixel).clamp_(0.0, 1.0)


def _per_pixel(values: torch.Tensor) -> torch.Tensor:
    """Adds height and width axes so that per-image values broadcast over (N, C, H, W)."""
    return values[..., None, None]


def _render_chunk(
    grid: _PixelGrid,
    pixel: float,
    hand: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    style: dict[str, torch.Tensor],
    generator: torch.Generator,
) -> torch.Tensor:
    """Renders one chunk of images, back to front, as (N, 3, H, W) floats in [0, 1]."""
    x, y = grid
    background = style["background_colours"]
    angle = _per_pixel(style["background_direction"][:, None])
    ramp = (x * angle.cos() + y * angle.sin()).mul_(0.5).add_(0.5).clamp_(0.0, 1.0)
    canvas = torch.lerp(_per_pixel(background[:, 0]), _per_pixel(background[:, 1]), ramp)

    background_mean = background.mean(dim=1, keepdim=True)
    stroke_colours = torch.lerp(background_mean, style["stroke_colours"], style["stroke_contrasts"])
    stroke_distance = _segment_distance(grid, style["stroke_ends"])
    stroke_distance -= _per_pixel(style["stroke_half_widths"])
    for index in range(_NUM_DISTRACTOR_STROKES):
        coverage = _coverage(stroke_distance[:, index], pixel)
        canvas.lerp_(_per_pixel(stroke_colours[:, index]), coverage)

    blob_colours = torch.lerp(background_mean, style["blob_colours"], style["blob_contrasts"])
    blobs = torch.cat(
        [style["blob_centres"], style["blob_axes"], style["blob_angles"][..., None]], dim=-1
    )
    blob_distance = _ellipse_signed_distance(grid, blobs)
    for index in range(_NUM_DISTRACTOR_BLOBS):
        canvas.lerp_(_per_pixel(blob_colours[:, index]), _coverage(blob_distance[:, index], pixel))

    segments, half_widths, ellipses = hand
    hand_distance = torch.minimum(
        (_segment_distance(grid, segments) - _per_pixel(half_widths)).amin(dim=1),
        _ellipse_signed_distance(grid, ellipses).amin(dim=1),
    )
    # Light falling from one side keeps the hand from being a flat, trivially segmented colour.
    light = _per_pixel(style["light_direction"][:, None])
    shading = (x * light.cos() + y * light.sin()).mul_(_per_pixel(style["light_strength"][:, None]))
    hand_colour = (_per_pixel(style["hand_colour"]) * shading.add_(1.0)).clamp_(0.0, 1.0)
    canvas.lerp_(hand_colour, _coverage(hand_distance, pixel))

    front_distance = _segment_distance(grid, style["front_ends"][:, None])[:, 0]
    front_distance -= _per_pixel(style["front_half_width"])
    front_coverage = _coverage(front_distance, pixel) * _per_pixel(style["has_front"][:, None])
    canvas.lerp_(_per_pixel(style["front_colour"]), front_coverage)

    noise = torch.randn(canvas.shape, generator=generator)
    return canvas.addcmul_(noise, _per_pixel(style["noise_std"][:, None])).clamp_(0.0, 1.0)
