"""The synthetic sign renderer: hands of 36 shapes, and the source task's glyphs and stars.

The target task stands in for a 36-class sign-language image set; the source task is
a different labelling of the same visual vocabulary, used to pretrain backbones. Both
are drawn as anti-aliased strokes and blobs on cluttered backgrounds, in chunks, so that
a large set is rendered straight into the store without being held whole.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import numpy as np
import torch

__all__ = ["GENERATOR_VERSION", "num_class_templates", "render_signs"]

# Part of the signs' and source's cache file names: bump it whenever their images change.
# Scenes have their own, `SCENE_GENERATOR_VERSION`.
GENERATOR_VERSION = 1

# Bounds peak memory of the (images, shapes, height, width) distance tensors: 256 images
# up to 64 px, fewer above, so a chunk never holds more pixels than 256 images of 64 px.
_RENDER_CHUNK = 256
_RENDER_CHUNK_PIXELS = _RENDER_CHUNK * 64 * 64

# Class templates are fixed per kind, independent of DataSpec.seed, so that
# different seeds give fresh samples of the same task rather than a new task.
_TEMPLATE_SEEDS = {"synthetic_signs": 1729, "synthetic_source": 4104}

# Padding shapes get a negative half-width so they never cover a pixel.
_INVISIBLE = -10.0

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


@dataclasses.dataclass(frozen=True, eq=False)
class _Template:
    """One class as shapes in the canonical pose.

    Attributes:
        segments: (S, 2, 2) stroke end points (x, y), y pointing down.
        half_widths: (S,) stroke half-widths.
        ellipses: (E, 5) blobs as centre x, centre y, semi-axis x, semi-axis y, angle.
    """

    segments: torch.Tensor
    half_widths: torch.Tensor
    ellipses: torch.Tensor


def num_class_templates(kind: str) -> int:
    """How many classes `kind` ("synthetic_signs" or "synthetic_source") can have."""
    return len(_class_templates(kind))


@functools.cache
def _class_templates(kind: str) -> tuple[_Template, ...]:
    """Returns every class template of `kind`, in a fixed order."""
    generator = torch.Generator().manual_seed(_TEMPLATE_SEEDS[kind])
    if kind == "synthetic_signs":
        return _hand_templates(generator)
    return _source_templates(generator)


# Finger slots as (angle from "up" in degrees, clockwise; finger length).
# The thumb sits low and wide so that the hand is not mirror-symmetric.
_FINGER_SLOTS = ((-80.0, 0.42), (-30.0, 0.56), (-8.0, 0.62), (14.0, 0.56), (36.0, 0.46))
_FOLDED, _EXTENDED, _HOOKED = 0, 1, 2
_PALM = (0.0, 0.22, 0.3, 0.25)
_FINGER_HALF_WIDTH = 0.085
_WRIST_HALF_WIDTH = 0.17
# Enlarges the whole hand about the image centre; the shapes above are drawn at unit size.
_HAND_SCALE = 1.25
_MIN_HAND_DIFFERENCE = 3


def _hand_templates(generator: torch.Generator) -> tuple[_Template, ...]:
    """Hands with each finger folded, extended or hooked, held upright or sideways.

    Classes are picked greedily from a shuffled enumeration so that any two are at
    least `_MIN_HAND_DIFFERENCE` apart, which keeps them distinguishable under pose
    jitter while leaving near neighbours (one finger hooked instead of extended).
    """
    configs = [
        (*fingers, orientation)
        for fingers in itertools.product((_FOLDED, _EXTENDED, _HOOKED), repeat=len(_FINGER_SLOTS))
        for orientation in (0, 1)
        if any(fingers)
    ]
    order = torch.randperm(len(configs), generator=generator).tolist()
    chosen: list[tuple[int, ...]] = []
    for index in order:
        candidate = configs[index]
        if all(_hand_difference(candidate, other) >= _MIN_HAND_DIFFERENCE for other in chosen):
            chosen.append(candidate)
    return tuple(_hand_template(config[:-1], sideways=bool(config[-1])) for config in chosen)


def _hand_difference(first: tuple[int, ...], second: tuple[int, ...]) -> int:
    """Counts visible differences; a finger appearing or vanishing, or a turned hand, count 2."""
    *first_fingers, first_orientation = first
    *second_fingers, second_orientation = second
    difference = 2 * (first_orientation != second_orientation)
    for a, b in zip(first_fingers, second_fingers, strict=True):
        difference += (a != b) + (_FOLDED in (a, b) and _EXTENDED in (a, b))
    return difference


def _hand_template(fingers: tuple[int, ...], *, sideways: bool) -> _Template:
    palm_x, palm_y, palm_ax, palm_ay = _PALM
    segments = [((0.0, palm_y + 0.15), (0.0, 1.4))]  # forearm, leaving the image
    half_widths = [_WRIST_HALF_WIDTH]
    for state, (angle_deg, length) in zip(fingers, _FINGER_SLOTS, strict=True):
        if state == _FOLDED:
            continue
        angle = math.radians(angle_deg)
        base = (palm_x + 0.8 * palm_ax * math.sin(angle), palm_y - 0.8 * palm_ay * math.cos(angle))
        direction = (math.sin(1.15 * angle), -math.cos(1.15 * angle))
        if state == _EXTENDED:
            tip = (base[0] + length * direction[0], base[1] + length * direction[1])
            segments.append((base, tip))
            half_widths.append(_FINGER_HALF_WIDTH)
            continue
        knuckle = (base[0] + 0.5 * length * direction[0], base[1] + 0.5 * length * direction[1])
        # Hooked fingers bend towards the palm's middle, the thumb across it.
        turn = math.radians(110.0 if angle_deg <= -8.0 else -110.0)
        bent = (
            direction[0] * math.cos(turn) - direction[1] * math.sin(turn),
            direction[0] * math.sin(turn) + direction[1] * math.cos(turn),
        )
        tip = (knuckle[0] + 0.4 * length * bent[0], knuckle[1] + 0.4 * length * bent[1])
        segments += [(base, knuckle), (knuckle, tip)]
        half_widths += [_FINGER_HALF_WIDTH, _FINGER_HALF_WIDTH]
    segment_tensor = torch.tensor(segments, dtype=torch.float32) * _HAND_SCALE
    ellipses = torch.tensor([[palm_x, palm_y, palm_ax, palm_ay, 0.0]], dtype=torch.float32)
    ellipses[0, :4] *= _HAND_SCALE
    if sideways:
        # Rotate the whole hand by 90 degrees about the palm centre so that it points left.
        centre = ellipses[0, :2]
        offsets = segment_tensor - centre
        segment_tensor = torch.stack([offsets[..., 1], -offsets[..., 0]], dim=-1) + centre
        ellipses[0, 4] = math.pi / 2
    half_width_tensor = torch.tensor(half_widths, dtype=torch.float32) * _HAND_SCALE
    return _Template(segment_tensor, half_width_tensor, ellipses)


_SOURCE_POOL_PER_FAMILY = 32
_GLYPH_HALF_WIDTH = 0.1
_LATTICE = tuple((x, y) for y in (-0.5, 0.0, 0.5) for x in (-0.5, 0.0, 0.5))
_STAR_DIRECTIONS = 12
_STAR_LENGTHS = (0.4, 0.7)
_STAR_BLOB_RADIUS = 0.32


def _source_templates(generator: torch.Generator) -> tuple[_Template, ...]:
    """Pretraining classes, alternating between lattice glyphs and radial stars.

    Both are made of the same strokes and blobs as the hands but labelled by other
    rules, so features transfer while the target classes are not simply relearnt.
    """
    glyphs = _lattice_glyphs(generator)
    stars = _radial_stars(generator)
    return tuple(template for pair in zip(glyphs, stars, strict=True) for template in pair)


def _random_index(generator: torch.Generator, size: int) -> int:
    return int(torch.randint(0, size, (1,), generator=generator))


def _lattice_glyphs(generator: torch.Generator) -> list[_Template]:
    """Open polylines through 3 to 5 points of a 3x3 lattice, plus a blob at a lattice point."""
    neighbours = {
        a: [b for b in range(9) if b != a and abs(a % 3 - b % 3) <= 1 and abs(a // 3 - b // 3) <= 1]
        for a in range(9)
    }
    chosen: list[tuple[frozenset, int]] = []
    templates = []
    while len(templates) < _SOURCE_POOL_PER_FAMILY:
        num_points = 3 + _random_index(generator, 3)
        path = [_random_index(generator, 9)]
        while len(path) < num_points:
            options = [b for b in neighbours[path[-1]] if b not in path]
            if not options:
                break
            path.append(options[_random_index(generator, len(options))])
        blob = _random_index(generator, 9)
        edges = frozenset(frozenset(edge) for edge in itertools.pairwise(path))
        # Require two differing edges, or one differing edge and another blob position.
        too_close = any(
            len(edges ^ other) + 2 * (blob != other_blob) < 4 for other, other_blob in chosen
        )
        if len(path) < 3 or too_close:
            continue
        chosen.append((edges, blob))
        segments = torch.tensor([(_LATTICE[a], _LATTICE[b]) for a, b in itertools.pairwise(path)])
        blob_x, blob_y = _LATTICE[blob]
        ellipses = torch.tensor([[blob_x, blob_y, 0.2, 0.14, 0.0]])
        half_widths = torch.full((segments.shape[0],), _GLYPH_HALF_WIDTH)
        templates.append(_Template(segments.float(), half_widths, ellipses.float()))
    return templates


def _radial_stars(generator: torch.Generator) -> list[_Template]:
    """A central blob with 1 to 4 straight or bent rays in any of 12 directions."""
    chosen: list[frozenset] = []
    templates = []
    while len(templates) < _SOURCE_POOL_PER_FAMILY:
        num_rays = 1 + _random_index(generator, 4)
        directions = torch.randperm(_STAR_DIRECTIONS, generator=generator)[:num_rays].tolist()
        rays = frozenset(
            (direction, _random_index(generator, len(_STAR_LENGTHS)), _random_index(generator, 2))
            for direction in directions
        )
        if any(len(rays ^ other) < 3 for other in chosen):
            continue
        chosen.append(rays)
        radius = _STAR_BLOB_RADIUS
        segments = []
        for direction, length_index, is_bent in sorted(rays):
            angle = 2 * math.pi * direction / _STAR_DIRECTIONS
            unit = (math.cos(angle), math.sin(angle))
            base = (0.8 * radius * unit[0], 0.8 * radius * unit[1])
            length = _STAR_LENGTHS[length_index]
            tip = (base[0] + length * unit[0], base[1] + length * unit[1])
            segments.append((base, tip))
            if is_bent:
                hook = (tip[0] - 0.25 * unit[1], tip[1] + 0.25 * unit[0])
                segments.append((tip, hook))
        ellipses = torch.tensor([[0.0, 0.0, radius, 0.8 * radius, 0.0]])
        half_widths = torch.full((len(segments),), _GLYPH_HALF_WIDTH)
        templates.append(_Template(torch.tensor(segments), half_widths, ellipses))
    return templates


def _stack_templates(
    templates: tuple[_Template, ...],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pads templates to common shape counts with invisible shapes."""
    max_segments = max(t.segments.shape[0] for t in templates)
    max_ellipses = max(t.ellipses.shape[0] for t in templates)
    segments = torch.zeros(len(templates), max_segments, 2, 2)
    half_widths = torch.full((len(templates), max_segments), _INVISIBLE)
    ellipses = torch.tensor([0.0, 0.0, 1e-3, 1e-3, 0.0]).repeat(len(templates), max_ellipses, 1)
    for index, template in enumerate(templates):
        segments[index, : template.segments.shape[0]] = template.segments
        half_widths[index, : template.half_widths.shape[0]] = template.half_widths
        ellipses[index, : template.ellipses.shape[0]] = template.ellipses
    return segments, half_widths, ellipses


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
