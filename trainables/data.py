"""Image data sets: synthetic ones made on the fly, and real ones read from disk.

The target task stands in for a 36-class sign-language image set; the source task is
a different labelling of the same visual vocabulary, used to pretrain backbones. The
scenes task (see `trainables.scenes`) adds per-pixel masks and object boxes, for joint
classification, segmentation and detection. ``image_folder`` and ``parquet`` data are
read from disk (see `trainables.real_data`). Every kind is cached on local disk.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch

from trainables.augment import Augmentation, augment_batch
from trainables.real_data import (
    READER_VERSION,
    REAL_KINDS,
    DataError,
    SourceInfo,
    check_num_classes,
    decode_source,
    report_skipped,
    source_fingerprint,
)
from trainables.scenes import MAX_OBJECTS, SCENE_CLASSES, SCENE_GENERATOR_VERSION, render_scenes

__all__ = [
    "CACHE_DIR_ENV",
    "cache_dir",
    "Augmentation",
    "DataError",
    "GENERATOR_VERSION",
    "KINDS",
    "MAX_OBJECTS",
    "TASKS_BY_KIND",
    "DataSpec",
    "ImageDataset",
    "Split",
    "iterate_batches",
    "iterate_task_batches",
    "load_dataset",
    "shard_for_eval",
    "tasks_for_kind",
]

# Part of the signs' and source's cache file names: bump it whenever their images change.
# Scenes have their own, `SCENE_GENERATOR_VERSION`.
GENERATOR_VERSION = 1

SYNTHETIC_KINDS = ("synthetic_signs", "synthetic_source", "synthetic_scenes")
KINDS = (*SYNTHETIC_KINDS, *REAL_KINDS)

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

CACHE_DIR_ENV = "PHASETUNE_CACHE_DIR"
# Per split; scenes also store masks and detections.
_CACHED_FIELDS = ("images", "labels")
_SCENE_FIELDS = ("masks", "detections")
# The synthetic cache key: the fields that change generated images (not augmentation).
_SYNTHETIC_KEY_FIELDS = ("kind", "num_samples", "image_size", "num_classes", "val_fraction", "seed")
# The scene detection head works at stride 4.
_SCENE_SIZE_STEP = 4
_MIN_SCENE_SIZE = 16

# Bounds peak memory of the (images, shapes, height, width) distance tensors.
_RENDER_CHUNK = 256

# Class templates are fixed per kind, independent of DataSpec.seed, so that
# different seeds give fresh samples of the same task rather than a new task.
_TEMPLATE_SEEDS = {"synthetic_signs": 1729, "synthetic_source": 4104}

# Padding shapes get a negative half-width so they never cover a pixel.
_INVISIBLE = -10.0

# Pixel centres as a (1, W) row of x and an (H, 1) column of y.
_PixelGrid = tuple[torch.Tensor, torch.Tensor]

# Difficulty knobs, in the [-1, 1] image coordinate frame unless noted.
_MAX_ROTATION = math.radians(10.0)
_SCALE_RANGE = (0.9, 1.1)
_MAX_SHIFT = 0.1
_THICKNESS_RANGE = (0.75, 1.3)
_NUM_DISTRACTOR_STROKES = 3
_NUM_DISTRACTOR_BLOBS = 2
_FRONT_DISTRACTOR_PROB = 0.2
_NOISE_STD_RANGE = (0.01, 0.05)
# Distractor colours are pulled towards the background by this much (0: invisible, 1: any colour),
# so that clutter stays less salient than the hand, as in photographs of a signer.
_CLUTTER_CONTRAST_RANGE = (0.1, 0.4)
_SKIN_TONE_PROB = 0.85
_BACKGROUND_CHROMA = 0.3


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Everything that determines a data set, generated or read from disk.

    Attributes:
        kind: "synthetic_signs" (target task), "synthetic_source" (pretraining task),
            "synthetic_scenes" (classification, segmentation and detection), or
            "image_folder" / "parquet" (read from `path`, see `trainables.real_data`).
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
        if self.kind in REAL_KINDS:
            self._check_real()
            return
        if self.path is not None:
            raise ValueError(f"{self.kind} data are made on the fly; path is for data on disk")
        available = _num_class_templates(self.kind)
        if self.num_classes is None or not 2 <= self.num_classes <= available:
            raise ValueError(f"{self.kind} supports 2..{available} classes, got {self.num_classes}")
        num_val = _num_val(self.num_samples, self.val_fraction)
        if num_val < 1 or num_val >= self.num_samples:
            raise ValueError(f"{self.num_samples} samples leave an empty train or val split")

    def _check_real(self) -> None:
        if not self.path:
            raise ValueError(f"path: {self.kind} data need the path of the data set")
        if self.num_classes is not None and self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")
        if self.on_corrupt not in ("error", "skip"):
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
        augmentation = Augmentation(hflip=self.hflip, crop_scale=self.crop_scale)
        return augmentation if augmentation.active else None

    def to_dict(self) -> dict:
        """Returns the spec as a JSON-compatible dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> DataSpec:
        """Builds a spec from `to_dict` output; unknown keys raise TypeError."""
        return cls(**dict(d))


# eq=False: dataclass equality would compare tensors, which has no single truth value.
@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """Images and targets of one split.

    Attributes:
        images: float32 (N, 3, H, W), normalised to roughly zero mean / unit std per channel.
        labels: int64 (N,); for scenes the class of the largest object.
        masks: int64 (N, H, W) for scenes and Parquet masks, else None; 0 is background,
            c + 1 an object of class c (the topmost object where objects overlap).
        detections: float32 (N, K, 5) for scenes (K = MAX_OBJECTS) and Parquet boxes, else
            None; rows
            ``[x1, y1, x2, y2, class]`` bound each object's visible mask pixels in pixel-edge
            coordinates (columns x1..x2-1, rows y1..y2-1), and rows without an object are -1.
    """

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor | None = None
    detections: torch.Tensor | None = None
    #: Random transforms the batch iterators apply; set on training splits only.
    augmentation: Augmentation | None = None

    def __len__(self) -> int:
        return self.labels.shape[0]

    def task_targets(self) -> dict[str, torch.Tensor]:
        """Returns the targets of every task this split has: "cls", then "seg" and "det"."""
        targets = {"cls": self.labels}
        if self.masks is not None:
            targets["seg"] = self.masks
        if self.detections is not None:
            targets["det"] = self.detections
        return targets


@dataclasses.dataclass(frozen=True, eq=False)
class ImageDataset:
    """A train/val pair; shared through a cache, so its tensors must not be modified in place."""

    train: Split
    val: Split
    num_classes: int

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks this data set has targets for, as in `TASKS_BY_KIND`."""
        return tuple(self.train.task_targets())


@dataclasses.dataclass(frozen=True, eq=False)
class _Template:
    """One class as shapes in the canonical pose.

    Attributes:
        segments: (S, 2, 2) stroke end points (x, y), y pointing down.
        half_widths: (S,) stroke half-widths.
        ellipses: (E, 5) blobs as centre x, centre y, semi-axis x, semi-axis y, angle.
    """

    segments: torch.Tensor
    half_widths: torch.Tensor
    ellipses: torch.Tensor


# Small: a 38,000-image set takes about 0.5 GB as float32.
@functools.lru_cache(maxsize=4)
def load_dataset(spec: DataSpec) -> ImageDataset:
    """Returns the data set described by `spec`, generating it on first use.

    Deterministic in `spec`; cached in-process and on disk (see `CACHE_DIR_ENV`), where a
    file lock makes concurrent loaders on a node wait for one of them to make the file.

    Raises:
        DataError: data on disk that cannot be used as `spec` says (one line).
    """
    if spec.kind in REAL_KINDS:
        return _load_real(spec)
    arrays = _cached(_cache_path(spec), _cached_arrays(spec.kind), lambda: _generate(spec))
    return _normalise(arrays, spec.num_classes, spec.augmentation)


def _load_real(spec: DataSpec) -> ImageDataset:
    """Decodes data on disk once per node (cached by file listing and settings), then splits."""
    key = source_fingerprint(spec)
    path = cache_dir() / "data" / f"{spec.kind}-{key}-r{READER_VERSION}.pt"
    fields = ("images", "labels")
    fields += ("masks",) * bool(spec.mask_column) + ("detections",) * bool(spec.boxes_column)
    arrays = _cached(path, fields, lambda: decode_source(spec), lists=("classes", "skipped"))
    report_skipped(spec, arrays["skipped"])
    num_classes = check_num_classes(spec.num_classes, _decoded_classes(spec, arrays))
    generator = torch.Generator().manual_seed(_stream_seed(spec))
    labels = arrays["labels"]
    val_mask = _val_mask(labels, num_classes, spec.val_fraction, generator)
    if not 0 < int(val_mask.sum()) < labels.shape[0]:
        raise DataError(
            f"dataset.val_fraction: {labels.shape[0]} images leave an empty train or val split"
        )
    split_arrays = {
        f"{split}_{name}": arrays[name][in_split]
        for split, in_split in (("train", ~val_mask), ("val", val_mask))
        for name in fields
    }
    return _normalise(split_arrays, num_classes, spec.augmentation)


def _decoded_classes(spec: DataSpec, arrays: dict) -> SourceInfo:
    """The classes the decoded targets use: names, or the largest id any target holds."""
    if arrays["classes"]:
        count = len(arrays["classes"])
        found = "class folders" if spec.kind == "image_folder" else "distinct labels"
        return SourceInfo(count, True, (), f"{count} {found}")
    largest = int(arrays["labels"].max())
    if "detections" in arrays:
        largest = max(largest, int(arrays["detections"][..., 4].max()))
    if "masks" in arrays:
        largest = max(largest, int(arrays["masks"].max()) - 1)
    return SourceInfo(largest + 1, False, (), f"class ids up to {largest} in labels or targets")


def tasks_for_kind(kind: str) -> tuple[str, ...]:
    """Returns the tasks that data of `kind` can have targets for (see `DataSpec.tasks`)."""
    if kind not in TASKS_BY_KIND:
        raise ValueError(f"unknown data kind {kind!r}; expected one of {KINDS}")
    return TASKS_BY_KIND[kind]


def iterate_batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yields one epoch of (images, labels) batches of this rank's shard.

    With `world_size > 1` the (permuted) index list is truncated to a multiple of
    `world_size`, so every rank gets the same number of samples and steps.

    Args:
        split: The split to iterate over.
        batch_size: Samples per batch.
        shuffle: Whether to permute the samples; ranks must pass generators in the same state.
        generator: Source of the permutation; required when shuffling across several ranks.
        rank: Index of this process among `world_size`.
        world_size: Number of processes sharing the epoch.
        drop_last: Whether to skip a final batch smaller than `batch_size`.
    """
    for batch in _batch_indices(
        len(split), batch_size, shuffle, generator, rank, world_size, drop_last
    ):
        if split.augmentation is None:
            yield split.images[batch], split.labels[batch]
            continue
        images, targets = augment_batch(
            split.images[batch], {"cls": split.labels[batch]}, split.augmentation, generator
        )
        yield images, targets["cls"]


def iterate_task_batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """Yields one epoch of (images, targets) batches, targets as in `Split.task_targets`.

    Takes the same arguments as `iterate_batches` and, for the same generator state,
    visits the same samples in the same batches. A split with an augmentation gets its
    random transforms drawn from `generator` after each batch's indices.
    """
    targets = split.task_targets()
    for batch in _batch_indices(
        len(split), batch_size, shuffle, generator, rank, world_size, drop_last
    ):
        images = split.images[batch]
        batch_targets = {task: target[batch] for task, target in targets.items()}
        if split.augmentation is not None:
            images, batch_targets = augment_batch(
                images, batch_targets, split.augmentation, generator
            )
        yield images, batch_targets


def _batch_indices(
    total: int,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None,
    rank: int,
    world_size: int,
    drop_last: bool,
) -> Iterator[torch.Tensor]:
    """Yields the sample indices of each of this rank's batches; see `iterate_batches`."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    _check_rank(rank, world_size)
    if shuffle and world_size > 1 and generator is None:
        raise ValueError("shuffling across ranks needs a generator so that all ranks agree")
    indices = torch.randperm(total, generator=generator) if shuffle else torch.arange(total)
    indices = indices[: total - total % world_size][rank::world_size]
    for start in range(0, indices.shape[0], batch_size):
        batch = indices[start : start + batch_size]
        if drop_last and batch.shape[0] < batch_size:
            return
        yield batch


def shard_for_eval(split: Split, rank: int, world_size: int) -> Split:
    """Returns this rank's contiguous part of `split`, unaugmented; all ranks' parts cover it
    exactly once."""
    _check_rank(rank, world_size)
    parts = {
        field.name: torch.tensor_split(value, world_size)[rank]
        for field in dataclasses.fields(split)
        if isinstance(value := getattr(split, field.name), torch.Tensor)
    }
    return Split(**parts)


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"invalid rank {rank} for world_size {world_size}")


def _num_val(num_samples: int, val_fraction: float) -> int:
    return round(num_samples * val_fraction)


# ---------------------------------------------------------------------------
# Disk cache


def cache_dir() -> Path:
    """Where generated data and pretrained backbones are cached (``CACHE_DIR_ENV``)."""
    return Path(os.environ.get(CACHE_DIR_ENV, Path.home() / ".cache" / "phasetune"))


def _cache_path(spec: DataSpec) -> Path:
    root = cache_dir()
    # Only the fields that change the generated images, so that synthetic caches made
    # before data on disk were supported stay valid and augmentation shares one file.
    key = {name: getattr(spec, name) for name in _SYNTHETIC_KEY_FIELDS}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    version = SCENE_GENERATOR_VERSION if spec.kind == "synthetic_scenes" else GENERATOR_VERSION
    return root / "data" / f"{spec.kind}-{digest}-v{version}.pt"


def _cached_arrays(kind: str) -> tuple[str, ...]:
    """Names of the arrays a cache file of `kind` must hold."""
    fields = (*_CACHED_FIELDS, *_SCENE_FIELDS) if kind == "synthetic_scenes" else _CACHED_FIELDS
    return tuple(f"{split}_{field}" for split in ("train", "val") for field in fields)


def _cached(
    path: Path, keys: tuple[str, ...], make: Callable[[], dict], lists: tuple[str, ...] = ()
) -> dict:
    """Reads the cache file, or makes and writes it while holding the file's lock.

    Concurrent trials on a node thus wait for one of them to make the data, then read
    the file; later ones read it without locking.
    """
    from filelock import FileLock

    arrays = _read_cache(path, keys, lists)
    if arrays is not None:
        return arrays
    # Locks live apart from the data, so the data folder holds only finished files.
    lock = cache_dir() / "locks" / f"{path.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock)):
        arrays = _read_cache(path, keys, lists)
        if arrays is None:
            arrays = make()
            _write_cache(path, arrays)
    return arrays


def _read_cache(
    path: Path, keys: tuple[str, ...], lists: tuple[str, ...] = ()
) -> dict[str, torch.Tensor] | None:
    """Returns the cached arrays, or None when the file is missing or lacks one of `keys`
    (tensors) or `lists`."""
    if not path.exists():
        return None
    try:
        arrays = torch.load(path, weights_only=True)
    except Exception:  # whatever makes the file unreadable, regenerating fixes it
        return None
    if not isinstance(arrays, dict):
        return None
    if not all(isinstance(arrays.get(key), torch.Tensor) for key in keys):
        return None
    if not all(isinstance(arrays.get(key), list) for key in lists):
        return None
    return arrays


def _write_cache(path: Path, arrays: dict[str, torch.Tensor]) -> None:
    """Writes atomically so that concurrent readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as temp_file:
            torch.save(arrays, temp_file)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _normalise(
    arrays: dict[str, torch.Tensor], num_classes: int, augmentation: Augmentation | None = None
) -> ImageDataset:
    """Standardises uint8 images per channel with statistics of the training split; only
    the training split gets `augmentation`."""
    train_images = arrays["train_images"]
    # Exact integer histograms keep the statistics independent of thread count and sum order.
    counts = torch.stack(
        [torch.bincount(train_images[:, channel].flatten(), minlength=256) for channel in range(3)]
    )
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    totals = counts.sum(dim=1).to(torch.float64)
    mean = (counts * levels).sum(dim=1) / totals
    std = ((counts * (levels - mean[:, None]) ** 2).sum(dim=1) / totals).sqrt().clamp_min(1e-3)
    scale = (1.0 / (255.0 * std)).to(torch.float32).view(1, 3, 1, 1)
    shift = (mean / std).to(torch.float32).view(1, 3, 1, 1)

    def to_split(name: str) -> Split:
        masks = arrays.get(f"{name}_masks")
        return Split(
            images=arrays[f"{name}_images"].to(torch.float32).mul_(scale).sub_(shift),
            labels=arrays[f"{name}_labels"].to(torch.int64),
            masks=None if masks is None else masks.to(torch.int64),
            detections=arrays.get(f"{name}_detections"),
            augmentation=augmentation if name == "train" else None,
        )

    return ImageDataset(train=to_split("train"), val=to_split("val"), num_classes=num_classes)


# ---------------------------------------------------------------------------
# Class templates


def _num_class_templates(kind: str) -> int:
    if kind == "synthetic_scenes":
        return len(SCENE_CLASSES)
    return len(_class_templates(kind))


@functools.cache
def _class_templates(kind: str) -> tuple[_Template, ...]:
    """Returns every class template of `kind`, in a fixed order."""
    generator = torch.Generator().manual_seed(_TEMPLATE_SEEDS[kind])
    if kind == "synthetic_signs":
        return _hand_templates(generator)
    return _source_templates(generator)


# Finger slots as (angle from "up" in degrees, clockwise; finger length).
# The thumb sits low and wide so that the hand is not mirror-symmetric.
_FINGER_SLOTS = ((-80.0, 0.42), (-30.0, 0.56), (-8.0, 0.62), (14.0, 0.56), (36.0, 0.46))
_FOLDED, _EXTENDED, _HOOKED = 0, 1, 2
_PALM = (0.0, 0.22, 0.3, 0.25)
_FINGER_HALF_WIDTH = 0.085
_WRIST_HALF_WIDTH = 0.17
# Enlarges the whole hand about the image centre; the shapes above are drawn at unit size.
_HAND_SCALE = 1.25
_MIN_HAND_DIFFERENCE = 3


def _hand_templates(generator: torch.Generator) -> tuple[_Template, ...]:
    """Hands with each finger folded, extended or hooked, held upright or sideways.

    Classes are picked greedily from a shuffled enumeration so that any two are at
    least `_MIN_HAND_DIFFERENCE` apart, which keeps them distinguishable under pose
    jitter while leaving near neighbours (one finger hooked instead of extended).
    """
    configs = [
        (*fingers, orientation)
        for fingers in itertools.product((_FOLDED, _EXTENDED, _HOOKED), repeat=len(_FINGER_SLOTS))
        for orientation in (0, 1)
        if any(fingers)
    ]
    order = torch.randperm(len(configs), generator=generator).tolist()
    chosen: list[tuple[int, ...]] = []
    for index in order:
        candidate = configs[index]
        if all(_hand_difference(candidate, other) >= _MIN_HAND_DIFFERENCE for other in chosen):
            chosen.append(candidate)
    return tuple(_hand_template(config[:-1], sideways=bool(config[-1])) for config in chosen)


def _hand_difference(first: tuple[int, ...], second: tuple[int, ...]) -> int:
    """Counts visible differences; a finger appearing or vanishing, or a turned hand, count 2."""
    *first_fingers, first_orientation = first
    *second_fingers, second_orientation = second
    difference = 2 * (first_orientation != second_orientation)
    for a, b in zip(first_fingers, second_fingers, strict=True):
        difference += (a != b) + (_FOLDED in (a, b) and _EXTENDED in (a, b))
    return difference


def _hand_template(fingers: tuple[int, ...], *, sideways: bool) -> _Template:
    palm_x, palm_y, palm_ax, palm_ay = _PALM
    segments = [((0.0, palm_y + 0.15), (0.0, 1.4))]  # forearm, leaving the image
    half_widths = [_WRIST_HALF_WIDTH]
    for state, (angle_deg, length) in zip(fingers, _FINGER_SLOTS, strict=True):
        if state == _FOLDED:
            continue
        angle = math.radians(angle_deg)
        base = (palm_x + 0.8 * palm_ax * math.sin(angle), palm_y - 0.8 * palm_ay * math.cos(angle))
        direction = (math.sin(1.15 * angle), -math.cos(1.15 * angle))
        if state == _EXTENDED:
            tip = (base[0] + length * direction[0], base[1] + length * direction[1])
            segments.append((base, tip))
            half_widths.append(_FINGER_HALF_WIDTH)
            continue
        knuckle = (base[0] + 0.5 * length * direction[0], base[1] + 0.5 * length * direction[1])
        # Hooked fingers bend towards the palm's middle, the thumb across it.
        turn = math.radians(110.0 if angle_deg <= -8.0 else -110.0)
        bent = (
            direction[0] * math.cos(turn) - direction[1] * math.sin(turn),
            direction[0] * math.sin(turn) + direction[1] * math.cos(turn),
        )
        tip = (knuckle[0] + 0.4 * length * bent[0], knuckle[1] + 0.4 * length * bent[1])
        segments += [(base, knuckle), (knuckle, tip)]
        half_widths += [_FINGER_HALF_WIDTH, _FINGER_HALF_WIDTH]
    segment_tensor = torch.tensor(segments, dtype=torch.float32) * _HAND_SCALE
    ellipses = torch.tensor([[palm_x, palm_y, palm_ax, palm_ay, 0.0]], dtype=torch.float32)
    ellipses[0, :4] *= _HAND_SCALE
    if sideways:
        # Rotate the whole hand by 90 degrees about the palm centre so that it points left.
        centre = ellipses[0, :2]
        offsets = segment_tensor - centre
        segment_tensor = torch.stack([offsets[..., 1], -offsets[..., 0]], dim=-1) + centre
        ellipses[0, 4] = math.pi / 2
    half_width_tensor = torch.tensor(half_widths, dtype=torch.float32) * _HAND_SCALE
    return _Template(segment_tensor, half_width_tensor, ellipses)


_SOURCE_POOL_PER_FAMILY = 32
_GLYPH_HALF_WIDTH = 0.1
_LATTICE = tuple((x, y) for y in (-0.5, 0.0, 0.5) for x in (-0.5, 0.0, 0.5))
_STAR_DIRECTIONS = 12
_STAR_LENGTHS = (0.4, 0.7)
_STAR_BLOB_RADIUS = 0.32


def _source_templates(generator: torch.Generator) -> tuple[_Template, ...]:
    """Pretraining classes, alternating between lattice glyphs and radial stars.

    Both are made of the same strokes and blobs as the hands but labelled by other
    rules, so features transfer while the target classes are not simply relearnt.
    """
    glyphs = _lattice_glyphs(generator)
    stars = _radial_stars(generator)
    return tuple(template for pair in zip(glyphs, stars, strict=True) for template in pair)


def _random_index(generator: torch.Generator, size: int) -> int:
    return int(torch.randint(0, size, (1,), generator=generator))


def _lattice_glyphs(generator: torch.Generator) -> list[_Template]:
    """Open polylines through 3 to 5 points of a 3x3 lattice, plus a blob at a lattice point."""
    neighbours = {
        a: [b for b in range(9) if b != a and abs(a % 3 - b % 3) <= 1 and abs(a // 3 - b // 3) <= 1]
        for a in range(9)
    }
    chosen: list[tuple[frozenset, int]] = []
    templates = []
    while len(templates) < _SOURCE_POOL_PER_FAMILY:
        num_points = 3 + _random_index(generator, 3)
        path = [_random_index(generator, 9)]
        while len(path) < num_points:
            options = [b for b in neighbours[path[-1]] if b not in path]
            if not options:
                break
            path.append(options[_random_index(generator, len(options))])
        blob = _random_index(generator, 9)
        edges = frozenset(frozenset(edge) for edge in itertools.pairwise(path))
        # Require two differing edges, or one differing edge and another blob position.
        too_close = any(
            len(edges ^ other) + 2 * (blob != other_blob) < 4 for other, other_blob in chosen
        )
        if len(path) < 3 or too_close:
            continue
        chosen.append((edges, blob))
        segments = torch.tensor([(_LATTICE[a], _LATTICE[b]) for a, b in itertools.pairwise(path)])
        blob_x, blob_y = _LATTICE[blob]
        ellipses = torch.tensor([[blob_x, blob_y, 0.2, 0.14, 0.0]])
        half_widths = torch.full((segments.shape[0],), _GLYPH_HALF_WIDTH)
        templates.append(_Template(segments.float(), half_widths, ellipses.float()))
    return templates


def _radial_stars(generator: torch.Generator) -> list[_Template]:
    """A central blob with 1 to 4 straight or bent rays in any of 12 directions."""
    chosen: list[frozenset] = []
    templates = []
    while len(templates) < _SOURCE_POOL_PER_FAMILY:
        num_rays = 1 + _random_index(generator, 4)
        directions = torch.randperm(_STAR_DIRECTIONS, generator=generator)[:num_rays].tolist()
        rays = frozenset(
            (direction, _random_index(generator, len(_STAR_LENGTHS)), _random_index(generator, 2))
            for direction in directions
        )
        if any(len(rays ^ other) < 3 for other in chosen):
            continue
        chosen.append(rays)
        radius = _STAR_BLOB_RADIUS
        segments = []
        for direction, length_index, is_bent in sorted(rays):
            angle = 2 * math.pi * direction / _STAR_DIRECTIONS
            unit = (math.cos(angle), math.sin(angle))
            base = (0.8 * radius * unit[0], 0.8 * radius * unit[1])
            length = _STAR_LENGTHS[length_index]
            tip = (base[0] + length * unit[0], base[1] + length * unit[1])
            segments.append((base, tip))
            if is_bent:
                hook = (tip[0] - 0.25 * unit[1], tip[1] + 0.25 * unit[0])
                segments.append((tip, hook))
        ellipses = torch.tensor([[0.0, 0.0, radius, 0.8 * radius, 0.0]])
        half_widths = torch.full((len(segments),), _GLYPH_HALF_WIDTH)
        templates.append(_Template(torch.tensor(segments), half_widths, ellipses))
    return templates


def _stack_templates(
    templates: tuple[_Template, ...],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pads templates to common shape counts with invisible shapes."""
    max_segments = max(t.segments.shape[0] for t in templates)
    max_ellipses = max(t.ellipses.shape[0] for t in templates)
    segments = torch.zeros(len(templates), max_segments, 2, 2)
    half_widths = torch.full((len(templates), max_segments), _INVISIBLE)
    ellipses = torch.tensor([0.0, 0.0, 1e-3, 1e-3, 0.0]).repeat(len(templates), max_ellipses, 1)
    for index, template in enumerate(templates):
        segments[index, : template.segments.shape[0]] = template.segments
        half_widths[index, : template.half_widths.shape[0]] = template.half_widths
        ellipses[index, : template.ellipses.shape[0]] = template.ellipses
    return segments, half_widths, ellipses


# ---------------------------------------------------------------------------
# Rendering


def _stream_seed(spec: DataSpec) -> int:
    """Derives a per-kind sample stream so that the two tasks never share random draws."""
    material = f"{spec.kind}:{spec.seed}".encode()
    return int.from_bytes(hashlib.sha256(material).digest()[:8], "little") & (2**63 - 1)


def _uniform(generator: torch.Generator, low: float, high: float, *shape: int) -> torch.Tensor:
    return low + (high - low) * torch.rand(*shape, generator=generator)


def _random_colours(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, 3, generator=generator)


def _background_colours(generator: torch.Generator, *shape: int) -> torch.Tensor:
    """Muted colours: a grey level plus a limited tint, like walls and rooms behind a signer."""
    grey = torch.rand(*shape, 1, generator=generator)
    tint = torch.rand(*shape, 3, generator=generator) - 0.5
    return (grey + _BACKGROUND_CHROMA * tint).clamp(0.0, 1.0)


def _hand_colours(generator: torch.Generator, count: int) -> torch.Tensor:
    """Mostly skin tones of varying darkness, otherwise any colour (gloves, odd lighting)."""
    brightness = _uniform(generator, 0.25, 1.0, count, 1)
    skin = brightness * torch.tensor([0.95, 0.72, 0.58]) + _uniform(
        generator, -0.08, 0.08, count, 3
    )
    other = _random_colours(generator, count)
    is_skin = torch.rand(count, 1, generator=generator) < _SKIN_TONE_PROB
    return torch.where(is_skin, skin, other).clamp(0.0, 1.0)


def _generate(spec: DataSpec) -> dict[str, torch.Tensor]:
    """Renders all images as uint8 and splits them and their targets into train and val."""
    generator = torch.Generator().manual_seed(_stream_seed(spec))
    # Balanced classes; the permutation decorrelates class from generation order.
    labels = torch.randperm(spec.num_samples, generator=generator) % spec.num_classes
    if spec.kind == "synthetic_scenes":
        scenes = render_scenes(labels, spec.image_size, spec.num_classes, generator)
        arrays = {
            "images": scenes.images,
            "labels": labels,
            "masks": scenes.masks,
            "detections": scenes.detections,
        }
    else:
        arrays = {"images": _render_templates(spec, labels, generator), "labels": labels}
    val_mask = _val_mask(labels, spec.num_classes, spec.val_fraction, generator)
    return {
        f"{split}_{name}": array[in_split]
        for split, in_split in (("train", ~val_mask), ("val", val_mask))
        for name, array in arrays.items()
    }


def _render_templates(
    spec: DataSpec, labels: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Renders one posed template per label on a cluttered background, as uint8 images."""
    count = labels.shape[0]
    templates = _class_templates(spec.kind)[: spec.num_classes]
    segments, half_widths, ellipses = _stack_templates(templates)

    # Every per-image parameter is drawn up front, so images do not depend on the chunk size.
    pose = {
        "rotation": _uniform(generator, -_MAX_ROTATION, _MAX_ROTATION, count),
        "scale": _uniform(generator, *_SCALE_RANGE, count),
        "shift": _uniform(generator, -_MAX_SHIFT, _MAX_SHIFT, count, 2),
        "thickness": _uniform(generator, *_THICKNESS_RANGE, count),
    }
    style = {
        "hand_colour": _hand_colours(generator, count),
        "light_direction": _uniform(generator, 0.0, 2 * math.pi, count),
        "light_strength": _uniform(generator, 0.0, 0.35, count),
        "background_colours": _background_colours(generator, count, 2),
        "background_direction": _uniform(generator, 0.0, 2 * math.pi, count),
        "stroke_ends": _uniform(generator, -1.1, 1.1, count, _NUM_DISTRACTOR_STROKES, 2, 2),
        "stroke_half_widths": _uniform(generator, 0.04, 0.1, count, _NUM_DISTRACTOR_STROKES),
        "stroke_colours": _random_colours(generator, count, _NUM_DISTRACTOR_STROKES),
        "stroke_contrasts": _uniform(
            generator, *_CLUTTER_CONTRAST_RANGE, count, _NUM_DISTRACTOR_STROKES, 1
        ),
        "blob_centres": _uniform(generator, -1.0, 1.0, count, _NUM_DISTRACTOR_BLOBS, 2),
        "blob_axes": _uniform(generator, 0.08, 0.3, count, _NUM_DISTRACTOR_BLOBS, 2),
        "blob_angles": _uniform(generator, 0.0, math.pi, count, _NUM_DISTRACTOR_BLOBS),
        "blob_colours": _random_colours(generator, count, _NUM_DISTRACTOR_BLOBS),
        "blob_contrasts": _uniform(
            generator, *_CLUTTER_CONTRAST_RANGE, count, _NUM_DISTRACTOR_BLOBS, 1
        ),
        "front_ends": _uniform(generator, -1.1, 1.1, count, 2, 2),
        "front_half_width": _uniform(generator, 0.03, 0.07, count),
        "front_colour": _random_colours(generator, count),
        "has_front": (torch.rand(count, generator=generator) < _FRONT_DISTRACTOR_PROB).float(),
        "noise_std": _uniform(generator, *_NOISE_STD_RANGE, count),
    }

    grid = _pixel_grid(spec.image_size)
    pixel = 2.0 / spec.image_size
    images = torch.empty(count, 3, spec.image_size, spec.image_size, dtype=torch.uint8)
    for start in range(0, count, _RENDER_CHUNK):
        part = slice(start, min(start + _RENDER_CHUNK, count))
        chunk_labels = labels[part]
        hand = _posed_shapes(
            segments[chunk_labels],
            half_widths[chunk_labels],
            ellipses[chunk_labels],
            {name: value[part] for name, value in pose.items()},
        )
        chunk_style = {name: value[part] for name, value in style.items()}
        pixels = _render_chunk(grid, pixel, hand, chunk_style, generator)
        images[part] = pixels.mul_(255.0).round_().to(torch.uint8)
    return images


def _val_mask(
    labels: torch.Tensor, num_classes: int, val_fraction: float, generator: torch.Generator
) -> torch.Tensor:
    """Picks val samples round-robin over classes, so that every class reaches val early."""
    count = labels.shape[0]
    order = torch.randperm(count, generator=generator)
    by_class = order[torch.argsort(labels[order], stable=True)]
    sorted_labels = labels[by_class]
    class_starts = torch.searchsorted(sorted_labels, sorted_labels, side="left")
    rank_in_class = torch.arange(count) - class_starts
    # Class order within a round is shuffled too, so no class is systematically favoured.
    class_priority = torch.randperm(num_classes, generator=generator)[sorted_labels]
    round_robin = by_class[torch.argsort(rank_in_class * num_classes + class_priority)]
    val_mask = torch.zeros(count, dtype=torch.bool)
    val_mask[round_robin[: _num_val(count, val_fraction)]] = True
    return val_mask


def _pixel_grid(size: int) -> _PixelGrid:
    """Pixel centres in [-1, 1] as a (1, W) row of x and an (H, 1) column of y, y pointing down.

    Keeping the axes separate lets per-shape terms broadcast, halving full-size tensor work.
    """
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) * (2.0 / size) - 1.0
    return coords[None, :], coords[:, None]


def _posed_shapes(
    segments: torch.Tensor,
    half_widths: torch.Tensor,
    ellipses: torch.Tensor,
    pose: dict[str, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Applies each image's rotation, scale, shift and stroke thickness to its template."""
    cos, sin = pose["rotation"].cos(), pose["rotation"].sin()
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    linear = rotation * pose["scale"][:, None, None]
    shift = pose["shift"]
    posed_segments = torch.einsum("nij,nskj->nski", linear, segments) + shift[:, None, None, :]
    stroke_scale = (pose["scale"] * pose["thickness"])[:, None]
    # Padding keeps its negative half-width, so it stays invisible after scaling.
    posed_half_widths = torch.where(half_widths > 0, half_widths * stroke_scale, half_widths)
    centres = torch.einsum("nij,nej->nei", linear, ellipses[..., :2]) + shift[:, None, :]
    axes = ellipses[..., 2:4] * pose["scale"][:, None, None]
    angles = ellipses[..., 4] + pose["rotation"][:, None]
    posed_ellipses = torch.cat([centres, axes, angles[..., None]], dim=-1)
    return posed_segments, posed_half_widths, posed_ellipses


def _segment_distance(grid: _PixelGrid, segments: torch.Tensor) -> torch.Tensor:
    """Distance from every pixel to every segment: (N, S, 2, 2) -> (N, S, H, W)."""
    x, y = grid
    start_x, start_y = segments[..., 0, 0, None, None], segments[..., 0, 1, None, None]
    along_x = segments[..., 1, 0, None, None] - start_x
    along_y = segments[..., 1, 1, None, None] - start_y
    inverse_length_sq = 1.0 / (along_x * along_x + along_y * along_y).clamp_min(1e-8)
    offset_x, offset_y = x - start_x, y - start_y
    # Position of the closest point along the segment, 0 at its start and 1 at its end.
    t = offset_x * (along_x * inverse_length_sq) + offset_y * (along_y * inverse_length_sq)
    t.clamp_(0.0, 1.0)
    return torch.hypot(
        torch.addcmul(offset_x, t, along_x, value=-1), torch.addcmul(offset_y, t, along_y, value=-1)
    )


def _ellipse_signed_distance(grid: _PixelGrid, ellipses: torch.Tensor) -> torch.Tensor:
    """Approximate signed distance to ellipse outlines: (N, E, 5) -> (N, E, H, W)."""
    x, y = grid
    offset_x, offset_y = x - ellipses[..., 0, None, None], y - ellipses[..., 1, None, None]
    cos, sin = ellipses[..., 4, None, None].cos(), ellipses[..., 4, None, None].sin()
    inverse_ax, inverse_ay = 1.0 / ellipses[..., 2, None, None], 1.0 / ellipses[..., 3, None, None]
    along = offset_x * (cos * inverse_ax) + offset_y * (sin * inverse_ax)
    across = offset_y * (cos * inverse_ay) - offset_x * (sin * inverse_ay)
    min_axis = ellipses[..., 2:4].amin(dim=-1)[..., None, None]
    return torch.hypot(along, across).sub_(1.0).mul_(min_axis)


def _coverage(signed_distance: torch.Tensor, pixel: float) -> torch.Tensor:
    """Anti-aliased fraction of each pixel inside a shape: (N, H, W) -> (N, 1, H, W)."""
    return (0.5 - signed_distance[:, None] / pixel).clamp_(0.0, 1.0)


def _per_pixel(values: torch.Tensor) -> torch.Tensor:
    """Adds height and width axes so that per-image values broadcast over (N, C, H, W)."""
    return values[..., None, None]


def _render_chunk(
    grid: _PixelGrid,
    pixel: float,
    hand: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    style: dict[str, torch.Tensor],
    generator: torch.Generator,
) -> torch.Tensor:
    """Renders one chunk of images, back to front, as (N, 3, H, W) floats in [0, 1]."""
    x, y = grid
    background = style["background_colours"]
    angle = _per_pixel(style["background_direction"][:, None])
    ramp = (x * angle.cos() + y * angle.sin()).mul_(0.5).add_(0.5).clamp_(0.0, 1.0)
    canvas = torch.lerp(_per_pixel(background[:, 0]), _per_pixel(background[:, 1]), ramp)

    background_mean = background.mean(dim=1, keepdim=True)
    stroke_colours = torch.lerp(background_mean, style["stroke_colours"], style["stroke_contrasts"])
    stroke_distance = _segment_distance(grid, style["stroke_ends"])
    stroke_distance -= _per_pixel(style["stroke_half_widths"])
    for index in range(_NUM_DISTRACTOR_STROKES):
        coverage = _coverage(stroke_distance[:, index], pixel)
        canvas.lerp_(_per_pixel(stroke_colours[:, index]), coverage)

    blob_colours = torch.lerp(background_mean, style["blob_colours"], style["blob_contrasts"])
    blobs = torch.cat(
        [style["blob_centres"], style["blob_axes"], style["blob_angles"][..., None]], dim=-1
    )
    blob_distance = _ellipse_signed_distance(grid, blobs)
    for index in range(_NUM_DISTRACTOR_BLOBS):
        canvas.lerp_(_per_pixel(blob_colours[:, index]), _coverage(blob_distance[:, index], pixel))

    segments, half_widths, ellipses = hand
    hand_distance = torch.minimum(
        (_segment_distance(grid, segments) - _per_pixel(half_widths)).amin(dim=1),
        _ellipse_signed_distance(grid, ellipses).amin(dim=1),
    )
    # Light falling from one side keeps the hand from being a flat, trivially segmented colour.
    light = _per_pixel(style["light_direction"][:, None])
    shading = (x * light.cos() + y * light.sin()).mul_(_per_pixel(style["light_strength"][:, None]))
    hand_colour = (_per_pixel(style["hand_colour"]) * shading.add_(1.0)).clamp_(0.0, 1.0)
    canvas.lerp_(hand_colour, _coverage(hand_distance, pixel))

    front_distance = _segment_distance(grid, style["front_ends"][:, None])[:, 0]
    front_distance -= _per_pixel(style["front_half_width"])
    front_coverage = _coverage(front_distance, pixel) * _per_pixel(style["has_front"][:, None])
    canvas.lerp_(_per_pixel(style["front_colour"]), front_coverage)

    noise = torch.randn(canvas.shape, generator=generator)
    return canvas.addcmul_(noise, _per_pixel(style["noise_std"][:, None])).clamp_(0.0, 1.0)
