"""The ``dataset`` section: built-in synthetic data, or an image folder or Parquet table
read from disk, checked against the data before Ray starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from search.config._section import _Section
from trainables.data import (
    REAL_KINDS,
    DataError,
    DataSpec,
    check_num_classes,
    inspect_source,
    parquet_columns,
)

__all__ = ["DEFAULT_NUM_CLASSES", "DatasetConfig"]


#: Classes of each built-in data set when the file does not say: the documents' own
#: 36 signs, and the multi-task document's 10 object classes.
DEFAULT_NUM_CLASSES = {"synthetic_signs": 36, "synthetic_scenes": 10}


class DatasetConfig(_Section):
    """The data set: built in and synthetic (made on the fly), or read from disk; cached.

    ``synthetic_signs`` has one task (cls); ``synthetic_scenes`` has three (seg, det,
    cls) for the multi-task strategies. ``image_folder`` reads ``path/<class>/<image>``
    (cls); ``parquet`` reads a table of encoded images and labels (cls), plus seg and det
    where it has the mask and boxes columns. Data on disk are decoded once per node.
    """

    kind: Literal["synthetic_signs", "synthetic_scenes", "image_folder", "parquet"] = (
        "synthetic_signs"
    )
    #: Synthetic kinds only: images made before the split.
    num_samples: int = Field(2400, ge=100, le=2_000_000)
    image_size: int = Field(32, ge=16, le=256)
    #: None (the default for data on disk): as many as the data have.
    num_classes: int | None = Field(36, ge=2, le=1000)
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    #: The folder of class folders (image_folder), or a Parquet file or folder of them.
    path: str | None = None
    image_column: str = "image"
    label_column: str = "label"
    #: Used where the table has this column: per-pixel PNG ids, 0 background, c + 1 class c.
    mask_column: str | None = "mask"
    #: Used where the table has this column: ``[x1, y1, x2, y2, class]`` lists in pixels.
    boxes_column: str | None = "boxes"
    #: An unreadable image: ``error`` stops with its path, ``skip`` leaves it out and warns.
    on_corrupt: Literal["error", "skip"] = "error"
    #: Training batches only: mirror left-right (masks and boxes too) half of the time.
    hflip: bool = False
    #: Training batches only: smallest area of a random resized crop; 1.0 is no crop.
    crop_scale: float = Field(1.0, gt=0.0, le=1.0)
    #: ``data``: standardise each channel with the training split's mean and std;
    #: ``imagenet``: with ImageNet's, as torchvision's pretrained weights expect. None
    #: follows the model: imagenet for torchvision backbones and weight files, else data.
    normalize: Literal["data", "imagenet"] | None = None
    #: Data on disk: ``squash`` resizes the whole image to the square (aspect ratio lost);
    #: ``shorter_side`` scales the shorter side to image_size and crops the centre, as
    #: torchvision's weights were evaluated.
    resize: Literal["squash", "shorter_side"] = "squash"

    @model_validator(mode="before")
    @classmethod
    def _classes_of_kind(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "num_classes" not in raw:
            kind = raw.get("kind", "synthetic_signs")
            if kind in DEFAULT_NUM_CLASSES:
                raw = {**raw, "num_classes": DEFAULT_NUM_CLASSES[kind]}
            elif kind in REAL_KINDS:
                raw = {**raw, "num_classes": None}
        return raw

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: str | None) -> str | None:
        # Trials run in their own working directories, so a relative path would not resolve.
        return str(Path(path).expanduser().resolve()) if path else path

    @model_validator(mode="after")
    def _data_on_disk(self) -> DatasetConfig:
        if self.kind not in REAL_KINDS:
            if self.path is not None:
                raise ValueError(
                    f"dataset.path: {self.kind} data are made on the fly; set dataset.kind to"
                    " image_folder or parquet to read data from a path"
                )
            if self.resize != "squash":
                raise ValueError(
                    f"dataset.resize: {self.kind} data are rendered at image_size; resize is"
                    " for image_folder and parquet data"
                )
            if self.num_classes is None:
                raise ValueError(f"dataset.num_classes: {self.kind} needs a number of classes")
            return self
        if not self.path:
            what = "a folder of class folders" if self.kind == "image_folder" else "a Parquet file"
            raise ValueError(f"dataset.path: {self.kind} data need one; give {what}")
        # Compared with the defaults, not with what the file set, so that a dumped and
        # reloaded config (resume, command-line overrides) validates the same.
        changed = [
            field
            for field in ("image_column", "label_column", "mask_column", "boxes_column")
            if getattr(self, field) != type(self).model_fields[field].default
        ]
        if self.kind == "image_folder" and changed:
            raise ValueError(
                f"dataset.{changed[0]}: only parquet data have columns; image_folder"
                " takes labels from the class folders"
            )
        try:
            info = inspect_source(self.kind, self.path, self.image_column, self.label_column)
            for field in ("mask_column", "boxes_column"):
                column = getattr(self, field)
                # The defaults are used where present; a column named outright must exist.
                if field in changed and column and column not in info.columns:
                    raise DataError(
                        f"dataset.{field}: no column {column!r} in {self.path}; its columns"
                        f" are {', '.join(info.columns)} (null: none)"
                    )
            check_num_classes(self.num_classes, info)
        except DataError as error:
            raise ValueError(str(error)) from None
        return self

    def data_spec(self, seed: int = 0, normalize: str = "data") -> DataSpec:
        """The data set as the trainables take it; Parquet masks and boxes are read where
        the table has their columns. ``normalize`` applies where the file leaves it out."""
        mask_column = boxes_column = None
        if self.kind == "parquet" and self.path:
            columns = parquet_columns(self.path)
            mask_column = self.mask_column if self.mask_column in columns else None
            boxes_column = self.boxes_column if self.boxes_column in columns else None
        return DataSpec(
            kind=self.kind,
            num_samples=self.num_samples,
            image_size=self.image_size,
            num_classes=self.num_classes,
            val_fraction=self.val_fraction,
            seed=seed,
            path=self.path,
            image_column=self.image_column,
            label_column=self.label_column,
            mask_column=mask_column,
            boxes_column=boxes_column,
            on_corrupt=self.on_corrupt,
            hflip=self.hflip,
            crop_scale=self.crop_scale,
            normalize=self.normalize or normalize,
            resize=self.resize,
        )
