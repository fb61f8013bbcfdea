"""Image data sets read from disk: class-per-folder images, or a Parquet table.

``image_folder`` reads ``path/<class name>/**/*.png|jpg|jpeg|bmp|webp``; class names
sorted give the label indices. ``parquet`` reads a file, or every ``*.parquet`` under a
folder, with an encoded-image column and a label column (class indices or names), plus
optional ``mask`` (PNG of per-pixel ids: 0 background, c + 1 class c) and ``boxes``
(lists of ``[x1, y1, x2, y2, class]`` in pixels) columns for segmentation and detection.

Images are decoded with Pillow and brought to the square ``image_size``, squashed or by
their shorter side and a centre crop (``DataSpec.resize``), straight into the node's store
(`trainables.data._store`), so a node decodes a data set once however many trials read it
and never holds it whole in memory.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from trainables.data._store import StoreWriter
from trainables.data_spec import DataError, DataSpec

__all__ = [
    "IMAGE_SUFFIXES",
    "READER_VERSION",
    "SourceInfo",
    "check_num_classes",
    "decode_source",
    "inspect_source",
    "parquet_columns",
    "report_skipped",
    "source_fingerprint",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# Part of the store names: bump it whenever decoding, resizing or the store changes.
READER_VERSION = 2

# Pillow releases the GIL while decoding, so a few threads shorten the one-off decode.
_DECODE_THREADS = min(8, os.cpu_count() or 1)
# Items decoded per window: bounds the decoded images waiting to be written.
_DECODE_WINDOW = 256


@dataclasses.dataclass(frozen=True)
class SourceInfo:
    """What a cheap look at a data set shows, before anything is decoded.

    Attributes:
        num_classes: Classes found: folders, distinct label names, or the largest
            integer label + 1.
        exact: Whether `num_classes` must match the configured count exactly (folders and
            label names); integer labels only need it to be at least this large.
        columns: Column names of a Parquet table; empty for folders.
        found: How the classes were found, for messages.
    """

    num_classes: int
    exact: bool
    columns: tuple[str, ...]
    found: str


def inspect_source(
    kind: str, path: str, image_column: str = "image", label_column: str = "label"
) -> SourceInfo:
    """Lists a data set's classes (and columns) without decoding an image.

    Raises:
        DataError: the path is missing or holds no usable data.
    """
    if kind == "image_folder":
        root = _existing(path, folder=True)
        classes = _class_folders(root)
        if len(classes) < 2:
            raise DataError(
                f"dataset.path: {root} has one class folder ({classes[0]}); a classifier needs"
                f" at least two: {root}/<class name>/<image> for each class"
            )
        shown = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
        return SourceInfo(len(classes), True, (), f"{len(classes)} class folders ({shown})")
    columns = parquet_columns(path)
    for field, column in (("image_column", image_column), ("label_column", label_column)):
        if column not in columns:
            raise DataError(
                f"dataset.{field}: no column {column!r} in {path}; its columns are"
                f" {', '.join(columns)}"
            )
    names, top, distinct = _label_values(_parquet_files(path), label_column)
    if distinct < 2:
        raise DataError(
            f"dataset.label_column: {label_column!r} in {path} holds one class only; a"
            " classifier needs at least two"
        )
    if names is not None:
        return SourceInfo(len(names), True, columns, f"{len(names)} distinct labels")
    return SourceInfo(top + 1, False, columns, f"labels up to {top}")


def check_num_classes(requested: int | None, info: SourceInfo) -> int:
    """Returns the number of classes to train: `requested`, or what the data has if None.

    Raises:
        DataError: `requested` does not fit the data.
    """
    if requested is None:
        return info.num_classes
    if info.exact and requested != info.num_classes:
        raise DataError(
            f"dataset.num_classes: is {requested} but the data has {info.found}; set it to"
            f" {info.num_classes} or leave it out to use the data's count"
        )
    if requested < info.num_classes:
        raise DataError(
            f"dataset.num_classes: is {requested} but the data has {info.found}; set it to at"
            f" least {info.num_classes} or leave it out to use the data's count"
        )
    return requested


def parquet_columns(path: str) -> tuple[str, ...]:
    """Column names of a Parquet file, or of the first file under a folder."""
    import pyarrow.parquet as pq

    first = _parquet_files(path)[0]
    try:
        return tuple(pq.read_schema(first).names)
    except Exception as error:  # whatever pyarrow raises, the file is not a usable table
        raise DataError(f"dataset.path: {first} is not a readable Parquet file ({error})") from None


def source_fingerprint(spec: DataSpec) -> str:
    """Digest of everything the decoded tensors depend on: the files (names, sizes,
    modification times), the columns read and the image size."""
    path = _existing(spec.path or "", folder=spec.kind == "image_folder")
    files = _image_files(path) if spec.kind == "image_folder" else _parquet_files(str(path))
    listing = []
    for file in files:
        stat = Path(file).stat()
        listing.append((os.path.relpath(file, path), stat.st_size, stat.st_mtime_ns))
    settings = {
        "kind": spec.kind,
        "path": str(path.resolve()),
        "image_size": spec.image_size,
        "resize": spec.resize,
        "columns": [spec.image_column, spec.label_column, spec.mask_column, spec.boxes_column]
        if spec.kind == "parquet"
        else [],
        "files": listing,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def decode_source(spec: DataSpec, path: Path) -> None:
    """Decodes every sample of a data set on disk into a new store at `path`.

    The store holds ``pixels`` uint8 (N, 3, S, S) and ``labels`` int64 (N,), for Parquet
    with those columns ``masks`` int16 (N, S, S) and ``detections`` float32 (N, K, 5); and
    the lists ``classes`` (class names, empty for integer labels) and ``skipped`` (the
    unreadable files or rows, which ``on_corrupt: skip`` leaves out).

    Raises:
        DataError: with ``on_corrupt: error``, at the first unreadable file or row; or the
            cache's disk has no room for the store.
    """
    if spec.kind == "image_folder":
        _decode_folder(spec, path)
    else:
        _decode_parquet(spec, path)


def report_skipped(spec: DataSpec, skipped: Sequence[str]) -> None:
    """Refuses a data set with unreadable samples, or warns naming each one it skipped."""
    if not skipped:
        return
    if spec.on_corrupt == "error":
        raise _corrupt_error(skipped[0])
    logger.warning(
        "dataset.on_corrupt is skip: left out %d unreadable sample(s): %s",
        len(skipped),
        "; ".join(skipped),
    )


# ---------------------------------------------------------------------------
# Listing


def _existing(path: str, *, folder: bool) -> Path:
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise DataError(f"dataset.path: {path} does not exist")
    if folder and not resolved.is_dir():
        raise DataError(f"dataset.path: {path} is not a folder; image_folder reads class folders")
    return resolved


def _class_folders(root: Path) -> list[str]:
    classes = sorted(
        entry.name for entry in os.scandir(root) if entry.is_dir() and entry.name[0] != "."
    )
    if not classes:
        raise DataError(
            f"dataset.path: {root} has no class folders; expected {root}/<class name>/<image>"
        )
    return classes


def _image_files(root: Path) -> list[Path]:
    """Every image under every class folder, in label order and then by path."""
    return [file for _, files in _class_files(root) for file in files]


def _class_files(root: Path) -> list[tuple[str, list[Path]]]:
    listing = []
    for name in _class_folders(root):
        files = sorted(
            file
            for file in (root / name).rglob("*")
            if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file()
        )
        if not files:
            raise DataError(
                f"dataset.path: class folder {root / name} holds no images"
                f" ({', '.join(IMAGE_SUFFIXES)})"
            )
        listing.append((name, files))
    return listing


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


def _decode_folder(spec: DataSpec, path: Path) -> None:
    root = _existing(spec.path or "", folder=True)
    listing = _class_files(root)
    files = [(file, label) for label, (_, paths) in enumerate(listing) for file in paths]
    size = spec.image_size
    writer = StoreWriter(path, {"pixels": (np.uint8, (len(files), 3, size, size))})
    try:
        pixels, labels = writer.array("pixels"), []

        def decode(item: tuple[Path, int]) -> tuple[np.ndarray, int]:
            return _decode_rgb(item[0], size, spec.resize)[0], item[1]

        def put(row: int, sample: tuple[np.ndarray, int]) -> None:
            pixels[row] = sample[0]
            labels.append(sample[1])

        names = [str(file) for file, _ in files]
        skipped = _decode_into(files, decode, names, spec.on_corrupt, put)
        _require_readable(len(labels))
        writer.finish(
            len(labels),
            extra={"labels": np.asarray(labels, dtype=np.int64)},
            lists={"classes": [name for name, _ in listing], "skipped": skipped},
        )
    except BaseException:
        writer.abort()
        raise


def _require_readable(count: int) -> None:
    if not count:
        raise DataError("dataset.path: no readable images; every file was skipped")


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
