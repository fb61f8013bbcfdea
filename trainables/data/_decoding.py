"""What the ``image_folder`` and ``parquet`` readers share: the check of
``dataset.path``, decoding one image onto the square ``image_size``, and the threaded
decode loop that skips or refuses unreadable samples (``dataset.on_corrupt``).
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from trainables.data_spec import DataError

# Pillow releases the GIL while decoding, so a few threads shorten the one-off decode.
_DECODE_THREADS = min(8, os.cpu_count() or 1)
# Items decoded per window: bounds the decoded images waiting to be written.
_DECODE_WINDOW = 256


def _existing(path: str, *, folder: bool) -> Path:
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise DataError(f"dataset.path: {path} does not exist")
    if folder and not resolved.is_dir():
        raise DataError(f"dataset.path: {path} is not a folder; image_folder reads class folders")
    return resolved


class _Unreadable(Exception):
    """One sample that cannot be decoded; the message says why."""


def _corrupt_error(first: str) -> DataError:
    return DataError(
        f"dataset.path: cannot read {first}; remove or replace it, or set dataset.on_corrupt: skip"
    )


@dataclasses.dataclass(frozen=True)
class _Geometry:
    """How an original image maps onto the square: ``new = old * scale - offset``."""

    scale_x: float
    scale_y: float
    left: int
    top: int
    resized: tuple[int, int]


def _geometry(original: tuple[int, int], size: int, resize: str) -> _Geometry:
    width, height = original
    if resize == "squash":
        return _Geometry(size / width, size / height, 0, 0, (size, size))
    scale = size / min(width, height)
    resized = (max(size, round(width * scale)), max(size, round(height * scale)))
    left, top = (resized[0] - size) // 2, (resized[1] - size) // 2
    return _Geometry(resized[0] / width, resized[1] / height, left, top, resized)


def _decode_rgb(
    source: str | Path | bytes, size: int, resize: str
) -> tuple[np.ndarray, _Geometry, tuple[int, int]]:
    """Returns the image as uint8 (3, size, size), how it was resized, and its original
    (width, height)."""
    from PIL import Image

    data = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with Image.open(data) as image:
            geometry = _geometry(image.size, size, resize)
            original = image.size
            # JPEG decodes at a reduced scale when the image is far larger than needed.
            image.draft("RGB", geometry.resized)
            # load() decodes the whole file, so a truncated one fails here and not later.
            image.load()
            rgb = image.convert("RGB").resize(geometry.resized, Image.Resampling.BILINEAR)
            if rgb.size != (size, size):
                box = (geometry.left, geometry.top, geometry.left + size, geometry.top + size)
                rgb = rgb.crop(box)
    except Exception as error:  # decoders raise many types for a bad file
        raise _Unreadable(f"{type(error).__name__}: {error}") from None
    return np.asarray(rgb).transpose(2, 0, 1), geometry, original


def _decode_into(
    items: Sequence[Any],
    decode: Callable[[Any], Any],
    names: Sequence[str],
    on_corrupt: str,
    put: Callable[[int, Any], None],
) -> list[str]:
    """Decodes every item, a window at a time in a few threads, and hands each decoded
    sample to ``put(row, sample)`` in order; returns the names of the items skipped.

    Raises:
        DataError: with ``on_corrupt: error``, naming the first unreadable item.
    """

    def attempt(item: Any) -> Any:
        try:
            return decode(item)
        except _Unreadable as error:
            return error

    skipped: list[str] = []
    row = 0
    with ThreadPoolExecutor(_DECODE_THREADS) as pool:
        for start in range(0, len(items), _DECODE_WINDOW):
            window = items[start : start + _DECODE_WINDOW]
            for offset, result in enumerate(pool.map(attempt, window)):
                if not isinstance(result, _Unreadable):
                    put(row, result)
                    row += 1
                    continue
                name = f"{names[start + offset]} ({result})"
                if on_corrupt == "error":
                    raise _corrupt_error(name)
                skipped.append(name)
    return skipped


def _require_readable(count: int) -> None:
    if not count:
        raise DataError("dataset.path: no readable images; every file was skipped")
