"""The sign renderer's class templates: hands for the target task, lattice glyphs and
radial stars for the source task, each class as strokes and blobs in a canonical pose."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import torch

__all__ = ["num_class_templates"]

# Class templates are fixed per kind, independent of DataSpec.seed, so that
# different seeds give fresh samples of the same task rather than a new task.
_TEMPLATE_SEEDS = {"synthetic_signs": 1729, "synthetic_source": 4104}

# Padding shapes get a negative half-width so they never cover a pixel.
_INVISIBLE = -10.0


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
