"""The ``parquet`` reader: a file, or every ``*.parquet`` under a folder, with an
encoded-image column, a label column and optional ``mask`` and ``boxes`` columns, decoded
into a store."""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Any

import numpy as np

from trainables.data._decoding import (
    _decode_into,
    _decode_rgb,
    _existing,
    _Geometry,
    _require_readable,
    _Unreadable,
)
from trainables.data._store import StoreWriter
from trainables.data_spec import DataError, DataSpec

__all__ = ["parquet_columns"]


def parquet_columns(path: str) -> tuple[str, ...]:
    """Column names of a Parquet file, or of the first file under a folder."""
    import pyarrow.parquet as pq

    first = _parquet_files(path)[0]
    try:
        return tuple(pq.read_schema(first).names)
    except Exception as error:  # whatever pyarrow raises, the file is not a usable table
        raise DataError(f"dataset.path: {first} is not a readable Parquet file ({error})") from None


# ---------------------------------------------------------------------------
# Listing


def _parquet_files(path: str) -> list[Path]:
    resolved = _existing(path, folder=False)
    if resolved.is_file():
        return [resolved]
    files = sorted(
        file
        for file in resolved.rglob("*.parquet")
        if file.is_file() and not file.name.startswith((".", "_"))
    )
    if not files:
        raise DataError(f"dataset.path: {path} holds no *.parquet files")
    return files


def _label_values(files: list[Path], column: str) -> tuple[list[str] | None, int, int]:
    """Sorted label names for string labels (and 0), or None and the largest integer label;
    then the number of distinct labels."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        chunks = [pq.read_table(file, columns=[column]).column(column) for file in files]
    except Exception as error:  # whatever pyarrow raises, the files are not one usable table
        raise DataError(
            f"dataset.path: cannot read {column!r} from {len(files)} file(s) ({error})"
        ) from None
    labels = pa.chunked_array([c for chunk in chunks for c in chunk.chunks], chunks[0].type)
    kind = labels.type
    if pa.types.is_dictionary(kind):
        labels, kind = labels.cast(kind.value_type), kind.value_type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        names = sorted(str(name) for name in pc.unique(labels.drop_null()).to_pylist())
        return names, 0, len(names)
    if pa.types.is_integer(kind):
        smallest, largest = pc.min_max(labels).values()
        if smallest.as_py() is not None and smallest.as_py() < 0:
            raise DataError(f"dataset.label_column: {column!r} holds a negative label")
        if largest.as_py() is None:
            raise DataError(f"dataset.label_column: {column!r} holds no labels")
        distinct = len(pc.unique(labels.drop_null()))
        return None, int(largest.as_py()), distinct
    raise DataError(
        f"dataset.label_column: {column!r} holds {kind}; give class indices (integers)"
        " or class names (strings)"
    )


# ---------------------------------------------------------------------------
# Decoding


def _decode_mask(
    data: bytes, original: tuple[int, int], size: int, geometry: _Geometry
) -> np.ndarray:
    """Returns a per-pixel id image as int16 (size, size), resized by nearest neighbour."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.mode not in ("L", "P", "I", "I;16"):
                raise _Unreadable(f"mask mode {image.mode}; give a single-channel PNG of ids")
            if image.size != original:
                raise _Unreadable(f"mask size {image.size} differs from the image's {original}")
            resized = image.resize(geometry.resized, Image.Resampling.NEAREST)
            ids = np.asarray(resized).astype(np.int16)
    except _Unreadable:
        raise
    except Exception as error:  # decoders raise many types for a bad file
        raise _Unreadable(f"mask {type(error).__name__}: {error}") from None
    return ids[geometry.top : geometry.top + size, geometry.left : geometry.left + size]


def _boxes(raw: Any, size: int, geometry: _Geometry) -> np.ndarray:
    """Maps ``[x1, y1, x2, y2, class]`` rows from original pixels onto the square; boxes
    a centre crop leaves without area are dropped."""
    raw = raw or []
    if any(box is None or len(box) != 5 or None in box for box in raw):
        raise _Unreadable("each box must be [x1, y1, x2, y2, class]")
    rows = np.asarray(raw, dtype=np.float32).reshape(-1, 5)
    if not np.isfinite(rows).all():
        raise _Unreadable("boxes hold a non-finite value")
    scale = np.array([geometry.scale_x, geometry.scale_y] * 2, dtype=np.float32)
    offset = np.array([geometry.left, geometry.top] * 2, dtype=np.float32)
    rows[:, :4] = np.clip(rows[:, :4] * scale - offset, 0.0, float(size))
    if geometry.left or geometry.top:
        rows = rows[(rows[:, 2] > rows[:, 0]) & (rows[:, 3] > rows[:, 1])]
    return rows


def _decode_parquet(spec: DataSpec, path: Path) -> None:
    import pyarrow.parquet as pq

    files = _parquet_files(spec.path or "")
    names, _, _ = _label_values(files, spec.label_column)
    index_of = None if names is None else {name: i for i, name in enumerate(names)}
    wanted = [spec.image_column, spec.label_column]
    wanted += [column for column in (spec.mask_column, spec.boxes_column) if column]
    size = spec.image_size

    def decode(row: dict[str, Any]) -> dict[str, Any]:
        if row[spec.image_column] is None or row[spec.label_column] is None:
            raise _Unreadable("missing image or label")
        image, geometry, original = _decode_rgb(row[spec.image_column], size, spec.resize)
        label = row[spec.label_column]
        sample = {"image": image, "label": index_of[label] if index_of else int(label)}
        if spec.mask_column:
            if row[spec.mask_column] is None:
                raise _Unreadable("missing mask")
            sample["mask"] = _decode_mask(row[spec.mask_column], original, size, geometry)
        if spec.boxes_column:
            sample["boxes"] = _boxes(row[spec.boxes_column], size, geometry)
        return sample

    total = sum(pq.ParquetFile(file).metadata.num_rows for file in files)
    reserved: dict[str, Any] = {"pixels": (np.uint8, (total, 3, size, size))}
    if spec.mask_column:
        reserved["masks"] = (np.int16, (total, size, size))
    writer = StoreWriter(path, reserved)
    try:
        pixels = writer.array("pixels")
        masks = writer.array("masks") if spec.mask_column else None
        labels: list[int] = []
        boxes: list[np.ndarray] = []

        def put(start: int, offset: int, sample: dict[str, Any]) -> None:
            row = start + offset
            pixels[row] = sample["image"]
            labels.append(sample["label"])
            if masks is not None:
                masks[row] = sample["mask"]
            if spec.boxes_column:
                boxes.append(sample["boxes"])

        skipped: list[str] = []
        # File by file, so that only one file's encoded rows are held at a time.
        for file in files:
            try:
                rows = pq.read_table(file, columns=wanted).to_pylist()
            except Exception as error:  # whatever pyarrow raises, the file is not a usable table
                raise DataError(f"dataset.path: cannot read {file} ({error})") from None
            row_names = [f"{file} row {number}" for number in range(len(rows))]
            skipped += _decode_into(
                rows, decode, row_names, spec.on_corrupt, functools.partial(put, len(labels))
            )
        _require_readable(len(labels))
        extra = {"labels": np.asarray(labels, dtype=np.int64)}
        if spec.boxes_column:
            most = max(1, max(len(rows) for rows in boxes))
            detections = np.full((len(boxes), most, 5), -1.0, dtype=np.float32)
            for index, rows in enumerate(boxes):
                detections[index, : len(rows)] = rows
            extra["detections"] = detections
        writer.finish(len(labels), extra=extra, lists={"classes": names or [], "skipped": skipped})
    except BaseException:
        writer.abort()
        raise
