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

The package's modules:

- ``_rules``: the numbers behind these rules and the generator's version.
- ``_shapes``: the ten shapes as signed distances, one class each.
- ``_render``: `render_scenes`, which draws every scene's layout and style up front.
- ``_paint``: one chunk of scenes painted back to front, with its masks and boxes.
"""

from __future__ import annotations

# `_keep_visible` is private; it is imported "as" itself to re-export it, because the
# tests check the top-down visibility rule directly.
from trainables.scenes._paint import _keep_visible as _keep_visible
from trainables.scenes._render import Scenes, render_scenes
from trainables.scenes._rules import MAX_OBJECTS, SCENE_GENERATOR_VERSION
from trainables.scenes._shapes import SCENE_CLASSES

__all__ = ["MAX_OBJECTS", "SCENE_CLASSES", "SCENE_GENERATOR_VERSION", "Scenes", "render_scenes"]
