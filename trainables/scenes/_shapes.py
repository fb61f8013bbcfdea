"""The scenes' shapes, one per class: signed distances in frame units."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

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
