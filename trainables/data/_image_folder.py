"""The ``image_folder`` reader: ``path/<class name>/**/<image>``, class names sorted
giving the label indices, decoded into a store."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from trainables.data._decoding import _decode_into, _decode_rgb, _existing, _require_readable
from trainables.data._store import StoreWriter
from trainables.data_spec import DataError, DataSpec

__all__ = ["IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


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
