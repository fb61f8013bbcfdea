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

The readers' parts: ``_image_folder`` and ``_parquet`` (one per format), and
``_decoding``, which both use. This module holds what the rest of the package calls.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from trainables.data._decoding import _corrupt_error, _existing
from trainables.data._image_folder import (
    IMAGE_SUFFIXES,
    _class_folders,
    _decode_folder,
    _image_files,
)
from trainables.data._parquet import (
    _decode_parquet,
    _label_values,
    _parquet_files,
    parquet_columns,
)
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

# Part of the store names: bump it whenever decoding, resizing or the store changes.
READER_VERSION = 2


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
