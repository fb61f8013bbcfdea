"""The scenes' rules as numbers: object sizes and placement, overlap, colours, clutter
and noise, and the generator version that names the scenes' cache files."""

from __future__ import annotations

import math

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
