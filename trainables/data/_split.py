"""Splits over mapped uint8 samples, and the batches a trial trains on.

A split is a list of rows into arrays that every process on a node maps from one file
(see `trainables.data._store`). A batch is gathered from those rows as uint8, moved to the
trial's device, converted to float and normalised there, then augmented: no process ever
holds a float copy of the whole data set. The next batch's rows are gathered in a
background thread while the current one trains, so pages that must come from disk do not
stall the step.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from trainables.augment import Augmentation, augment_batch

__all__ = [
    "ImageDataset",
    "Normalization",
    "Samples",
    "Split",
    "iterate_batches",
    "iterate_task_batches",
    "shard_for_eval",
]

Batch = tuple[torch.Tensor, dict[str, torch.Tensor]]


@dataclasses.dataclass(frozen=True)
class Normalization:
    """Per-channel ``float(pixel) * scale - shift``: ``(pixel / 255 - mean) / std``.

    Attributes:
        scale: float32 values of ``1 / (255 std)`` per channel (RGB).
        shift: float32 values of ``mean / std`` per channel.
    """

    scale: tuple[float, float, float]
    shift: tuple[float, float, float]

    @classmethod
    def from_statistics(cls, mean: torch.Tensor, std: torch.Tensor) -> Normalization:
        """From float64 channel means and standard deviations of pixels in [0, 1]."""
        scale = (1.0 / (255.0 * std)).to(torch.float32)
        shift = (mean / std).to(torch.float32)
        return cls(tuple(scale.tolist()), tuple(shift.tolist()))

    def apply(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) on any device -> normalised float32 on the same device."""
        scale, shift = _constants(self, pixels.device)
        return pixels.to(torch.float32).mul_(scale).sub_(shift)


@functools.lru_cache(maxsize=16)
def _constants(
    normalization: Normalization, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    def column(values: tuple[float, float, float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    return column(normalization.scale), column(normalization.shift)


# eq=False: dataclass equality would compare tensors, which has no single truth value.
@dataclasses.dataclass(frozen=True, eq=False)
class Samples:
    """Row-aligned arrays of every sample of a data set, mapped read-only from the store.

    Attributes:
        pixels: uint8 (M, 3, H, W).
        labels: int64 (M,); for scenes the class of the largest object.
        masks: integer ids (M, H, W) for scenes and Parquet masks, else None; 0 is
            background, c + 1 an object of class c (the topmost where objects overlap).
        detections: float32 (M, K, 5) for scenes and Parquet boxes, else None; rows
            ``[x1, y1, x2, y2, class]`` in pixel-edge coordinates, -1 rows for no object.
    """

    pixels: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor | None = None
    detections: torch.Tensor | None = None

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            field.name: value
            for field in dataclasses.fields(self)
            if (value := getattr(self, field.name)) is not None
        }

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    def to(self, device: torch.device) -> Samples:
        return Samples(**{name: t.to(device) for name, t in self.tensors().items()})


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """One split: which rows of `samples` it holds, and how its batches are made.

    Attributes:
        samples: The data set's arrays (shared with the other split for data on disk).
        rows: int64 (N,) rows of `samples` in this split, in order.
        normalization: How uint8 pixels become the model's float input.
        augmentation: Random transforms the batch iterators apply; training splits only.
    """

    samples: Samples
    rows: torch.Tensor
    normalization: Normalization
    augmentation: Augmentation | None = None

    def __len__(self) -> int:
        return self.rows.shape[0]

    @functools.cached_property
    def labels(self) -> torch.Tensor:
        """int64 (N,) class labels of the split."""
        return self.samples.labels[self.rows.to(self.samples.labels.device)]

    @property
    def images(self) -> torch.Tensor:
        """Every image of the split as normalised float32 (N, 3, H, W), unaugmented.

        A float copy of the whole split: for small data and inspection. Training and
        evaluation gather batches instead (`iterate_task_batches`).
        """
        return self.normalization.apply(self._take("pixels", self.rows))

    @property
    def masks(self) -> torch.Tensor | None:
        """int64 (N, H, W) per-pixel ids, or None."""
        if self.samples.masks is None:
            return None
        return self._take("masks", self.rows).to(torch.int64)

    @property
    def detections(self) -> torch.Tensor | None:
        """float32 (N, K, 5) boxes, or None."""
        if self.samples.detections is None:
            return None
        return self._take("detections", self.rows)

    def task_targets(self) -> dict[str, torch.Tensor]:
        """The targets of every task this split has: "cls", then "seg" and "det"."""
        return _targets(self.samples, self.rows)

    def gather(self, positions: torch.Tensor) -> Batch:
        """uint8 images and the targets of the split's samples at `positions`, where the
        samples live (host or device)."""
        rows = self.rows[positions]
        return self._take("pixels", rows), _targets(self.samples, rows)

    def _take(self, name: str, rows: torch.Tensor) -> torch.Tensor:
        array = getattr(self.samples, name)
        return array[rows.to(array.device)]


def _targets(samples: Samples, rows: torch.Tensor) -> dict[str, torch.Tensor]:
    rows = rows.to(samples.labels.device)
    targets = {"cls": samples.labels[rows]}
    if samples.masks is not None:
        targets["seg"] = samples.masks[rows].to(torch.int64)
    if samples.detections is not None:
        targets["det"] = samples.detections[rows]
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

    @property
    def nbytes(self) -> int:
        """Bytes of the samples both splits read (counted once where they share them)."""
        unique = {id(split.samples): split.samples for split in (self.train, self.val)}
        return sum(samples.nbytes for samples in unique.values())

    def to(self, device: torch.device) -> ImageDataset:
        """A copy whose samples live on `device` (as uint8); the splits' rows stay."""
        moved: dict[int, Samples] = {}

        def move(split: Split) -> Split:
            key = id(split.samples)
            if key not in moved:
                moved[key] = split.samples.to(device)
            return dataclasses.replace(split, samples=moved[key])

        return dataclasses.replace(self, train=move(self.train), val=move(self.val))


def iterate_batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
    device: torch.device | None = None,
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
        device: Where batches are converted, normalised and augmented (default: the CPU).
    """
    for images, targets in iterate_task_batches(
        split,
        batch_size,
        shuffle=shuffle,
        generator=generator,
        rank=rank,
        world_size=world_size,
        drop_last=drop_last,
        device=device,
    ):
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
    device: torch.device | None = None,
) -> Iterator[Batch]:
    """Yields one epoch of (images, targets) batches, targets as in `Split.task_targets`.

    Takes the same arguments as `iterate_batches` and, for the same generator state,
    visits the same samples in the same batches. A split with an augmentation gets its
    random transforms drawn from `generator` after each batch's indices.
    """
    device = device or torch.device("cpu")
    batches = _batch_indices(
        len(split), batch_size, shuffle, generator, rank, world_size, drop_last
    )
    for pixels, targets in _prefetched(split, batches, pin=device.type == "cuda"):
        images = split.normalization.apply(pixels.to(device, non_blocking=True))
        targets = {task: target.to(device, non_blocking=True) for task, target in targets.items()}
        if split.augmentation is not None:
            images, targets = augment_batch(images, targets, split.augmentation, generator)
        yield images, targets


def _prefetched(split: Split, batches: list[torch.Tensor], *, pin: bool) -> Iterator[Batch]:
    """Gathers each batch's rows one batch ahead, in a background thread."""

    def gather(positions: torch.Tensor) -> Batch:
        pixels, targets = split.gather(positions)
        if pin and pixels.device.type == "cpu":
            pixels = pixels.pin_memory()
            targets = {task: target.pin_memory() for task, target in targets.items()}
        return pixels, targets

    if len(batches) < 2:
        yield from map(gather, batches)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="phasetune-batches") as pool:
        pending: Future[Batch] = pool.submit(gather, batches[0])
        for following in batches[1:]:
            current = pending.result()
            pending = pool.submit(gather, following)
            yield current
        yield pending.result()


def _batch_indices(
    total: int,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None,
    rank: int,
    world_size: int,
    drop_last: bool,
) -> list[torch.Tensor]:
    """The positions of each of this rank's batches; see `iterate_batches`."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    _check_rank(rank, world_size)
    if shuffle and world_size > 1 and generator is None:
        raise ValueError("shuffling across ranks needs a generator so that all ranks agree")
    indices = torch.randperm(total, generator=generator) if shuffle else torch.arange(total)
    indices = indices[: total - total % world_size][rank::world_size]
    batches = list(torch.split(indices, batch_size))
    if drop_last and batches and batches[-1].shape[0] < batch_size:
        batches.pop()
    return batches


def shard_for_eval(split: Split, rank: int, world_size: int) -> Split:
    """Returns this rank's contiguous part of `split`, unaugmented; all ranks' parts cover it
    exactly once."""
    _check_rank(rank, world_size)
    rows = torch.tensor_split(split.rows, world_size)[rank]
    return dataclasses.replace(split, rows=rows, augmentation=None)


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"invalid rank {rank} for world_size {world_size}")
