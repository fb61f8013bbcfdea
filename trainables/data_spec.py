"""What determines a data set: `DataSpec`, the kinds and their tasks, and `DataError`.

A leaf beside `trainables.data`: its readers, renderers and store import it, never the
other way round, and so do the plan definitions (`trainables.phases`) that results are
read with. It imports no torch, so neither do they.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainables.augment import Augmentation

__all__ = [
    "CLASS_TEMPLATES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KINDS",
    "NORMALIZE_MODES",
    "ON_CORRUPT",
    "REAL_KINDS",
    "RESIZE_MODES",
    "SYNTHETIC_KINDS",
    "TASKS_BY_KIND",
    "DataError",
    "DataSpec",
    "num_val",
    "tasks_for_kind",
]

SYNTHETIC_KINDS = ("synthetic_signs", "synthetic_source", "synthetic_scenes")
#: How many classes each synthetic kind can have: its renderer's class templates. Written
#: out, so that checking a spec does not load the renderers (torch);
#: tests/trainables/test_data.py checks them against the renderers.
CLASS_TEMPLATES = {"synthetic_signs": 41, "synthetic_source": 64, "synthetic_scenes": 10}
REAL_KINDS = ("image_folder", "parquet")
KINDS = (*SYNTHETIC_KINDS, *REAL_KINDS)
ON_CORRUPT = ("error", "skip")

# Which targets each kind can provide, in the order `Split.task_targets` lists them.
# A Parquet table has seg and det only with mask and boxes columns: `DataSpec.tasks`
# says what one data set offers.
TASKS_BY_KIND: dict[str, tuple[str, ...]] = {
    "synthetic_signs": ("cls",),
    "synthetic_source": ("cls",),
    "synthetic_scenes": ("cls", "seg", "det"),
    "image_folder": ("cls",),
    "parquet": ("cls", "seg", "det"),
}

#: ``data``: each channel standardised with the training split's own mean and std;
#: ``imagenet``: with ImageNet's, which torchvision's pretrained weights expect.
NORMALIZE_MODES = ("data", "imagenet")
#: ``squash``: the whole image resized to a square, aspect ratio lost; ``shorter_side``:
#: the shorter side scaled to the image size, then the centre cropped square (how
#: torchvision's weights were evaluated).
RESIZE_MODES = ("squash", "shorter_side")
# torchvision's ImageNet statistics (RGB, in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# The scene detection head works at stride 4.
_SCENE_SIZE_STEP = 4
_MIN_SCENE_SIZE = 16


class DataError(ValueError):
    """A data set on disk that cannot be used as configured; one line naming the field or file."""


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Everything that determines a data set, generated or read from disk.

    Attributes:
        kind: "synthetic_signs" (target task), "synthetic_source" (pretraining task),
            "synthetic_scenes" (classification, segmentation and detection), or
            "image_folder" / "parquet" (read from `path`).
        num_samples: Total number of images before the train/val split (synthetic only).
        image_size: Height and width in pixels; for scenes, and Parquet data with masks or
            boxes, a multiple of 4, at least 16.
        num_classes: Number of classes; the first `num_classes` templates of the kind are
            used. For data on disk None takes the data's count.
        val_fraction: Fraction of the samples held out for validation (stratified by class).
        seed: Seed of the sample stream (poses, colours, clutter, noise) and of the split.
        path: The folder of class folders (image_folder), or a Parquet file or folder.
        image_column: Parquet column of encoded images (PNG, JPEG, ...).
        label_column: Parquet column of class indices or class names.
        mask_column: Parquet column of PNG masks (0 background, c + 1 class c), or None.
        boxes_column: Parquet column of ``[x1, y1, x2, y2, class]`` pixel boxes, or None.
        on_corrupt: "error" refuses a data set with an unreadable file, "skip" leaves such
            files out with a warning naming each.
        hflip: Mirror training images (and their masks and boxes) with probability 0.5.
        crop_scale: Smallest area fraction of a random resized crop of training images;
            1.0 turns cropping off.
        normalize: One of `NORMALIZE_MODES`.
        resize: How data on disk reach the square image size; one of `RESIZE_MODES`.
        snapshot: Data on disk only: the digest of the files (names, sizes, modification
            times) that a search pinned when it started, so every trial and worker trains on
            that version; None takes the files as they are now.
    """

    kind: str = "synthetic_signs"
    num_samples: int = 3600
    image_size: int = 32
    num_classes: int | None = 36
    val_fraction: float = 0.2
    seed: int = 0
    path: str | None = None
    image_column: str = "image"
    label_column: str = "label"
    mask_column: str | None = None
    boxes_column: str | None = None
    on_corrupt: str = "error"
    hflip: bool = False
    crop_scale: float = 1.0
    normalize: str = "data"
    resize: str = "squash"
    snapshot: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown data kind {self.kind!r}; expected one of {KINDS}")
        if self.image_size < 8:
            raise ValueError(f"image_size must be at least 8, got {self.image_size}")
        if set(self.tasks) & {"seg", "det"} and (
            self.image_size < _MIN_SCENE_SIZE or self.image_size % _SCENE_SIZE_STEP
        ):
            raise ValueError(
                f"{self.kind} needs an image_size that is a multiple of {_SCENE_SIZE_STEP} "
                f"and at least {_MIN_SCENE_SIZE}, got {self.image_size}"
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if not 0.0 < self.crop_scale <= 1.0:
            raise ValueError(f"crop_scale must be in (0, 1], got {self.crop_scale}")
        if self.normalize not in NORMALIZE_MODES:
            raise ValueError(f"normalize: use one of {NORMALIZE_MODES}, got {self.normalize!r}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize: use one of {RESIZE_MODES}, got {self.resize!r}")
        if self.kind in REAL_KINDS:
            self._check_real()
            return
        if self.path is not None:
            raise ValueError(f"{self.kind} data are made on the fly; path is for data on disk")
        if self.resize != "squash" or self.snapshot is not None:
            raise ValueError(
                f"{self.kind} data are rendered at image_size; resize is for data on disk"
            )
        available = CLASS_TEMPLATES[self.kind]
        if self.num_classes is None or not 2 <= self.num_classes <= available:
            raise ValueError(f"{self.kind} supports 2..{available} classes, got {self.num_classes}")
        count = num_val(self.num_samples, self.val_fraction)
        if count < 1 or count >= self.num_samples:
            raise ValueError(f"{self.num_samples} samples leave an empty train or val split")

    def _check_real(self) -> None:
        if not self.path:
            raise ValueError(f"path: {self.kind} data need the path of the data set")
        if self.num_classes is not None and self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")
        if self.on_corrupt not in ON_CORRUPT:
            raise ValueError(f"on_corrupt: use error or skip, got {self.on_corrupt!r}")
        if self.kind == "image_folder" and (self.mask_column or self.boxes_column):
            raise ValueError("image_folder data have labels only; masks and boxes need parquet")

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks this data set has targets for, in `Split.task_targets` order."""
        if self.kind != "parquet":
            return TASKS_BY_KIND[self.kind]
        return ("cls",) + ("seg",) * bool(self.mask_column) + ("det",) * bool(self.boxes_column)

    @property
    def augmentation(self) -> Augmentation | None:
        """The training batches' random transforms, or None."""
        from trainables.augment import Augmentation  # deferred: it needs torch

        augmentation = Augmentation(hflip=self.hflip, crop_scale=self.crop_scale)
        return augmentation if augmentation.active else None

    def to_dict(self) -> dict:
        """Returns the spec as a JSON-compatible dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> DataSpec:
        """Builds a spec from `to_dict` output; unknown keys raise TypeError."""
        return cls(**dict(d))


def tasks_for_kind(kind: str) -> tuple[str, ...]:
    """Returns the tasks that data of `kind` can have targets for (see `DataSpec.tasks`)."""
    if kind not in TASKS_BY_KIND:
        raise ValueError(f"unknown data kind {kind!r}; expected one of {KINDS}")
    return TASKS_BY_KIND[kind]


def num_val(num_samples: int, val_fraction: float) -> int:
    """Samples the validation split holds out of `num_samples`."""
    return round(num_samples * val_fraction)
