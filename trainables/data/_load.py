"""`load_dataset`: a spec's data set, made or decoded once per node, mapped by every process."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from trainables.data._readers import (
    READER_VERSION,
    SourceInfo,
    check_num_classes,
    decode_source,
    report_skipped,
    source_fingerprint,
)
from trainables.data._signs import GENERATOR_VERSION, render_signs
from trainables.data._split import ImageDataset, Normalization, Samples, Split
from trainables.data._store import (
    Store,
    StoreWriter,
    cache_dir,
    cached_store,
    read_json,
    write_json,
)
from trainables.data_spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    REAL_KINDS,
    DataError,
    DataSpec,
    num_val,
)
from trainables.scenes import SCENE_GENERATOR_VERSION, render_scenes

__all__ = ["load_dataset", "pin_snapshot", "store_path"]

# The synthetic cache key: the fields that change generated images (not augmentation).
_SYNTHETIC_KEY_FIELDS = ("kind", "num_samples", "image_size", "num_classes", "val_fraction", "seed")
# Rows per step of the pixel statistics: bounds the memory of one pass over the data.
_STATISTICS_CHUNK = 512


# Small: each entry maps its arrays, it does not hold them.
@functools.lru_cache(maxsize=4)
def load_dataset(spec: DataSpec) -> ImageDataset:
    """Returns the data set described by `spec`, making or decoding it on first use.

    Deterministic in `spec`. The samples live once per node in a store file under the
    cache (see `trainables.data._store`): a file lock makes concurrent loaders on a node
    wait for one of them to write it, then every process maps it read-only.

    Raises:
        DataError: data on disk that cannot be used as `spec` says (one line).
    """
    if spec.kind in REAL_KINDS:
        return _load_real(spec)
    path = store_path(spec)
    required = ("pixels", "labels", "train_rows", "val_rows")
    if spec.kind == "synthetic_scenes":
        required += ("masks", "detections")
    store = cached_store(path, lambda target: _generate(spec, target), required)
    return _dataset(spec, store, path, store["train_rows"], store["val_rows"], spec.num_classes)


def store_path(spec: DataSpec) -> Path:
    """The node's store file of `spec`'s samples (for data on disk: as pinned, or as the
    files are now)."""
    if spec.kind in REAL_KINDS:
        return _real_store_path(spec, spec.snapshot or source_fingerprint(spec))
    # Only the fields that change the generated images, so augmentation and
    # normalisation share one file.
    key = {name: getattr(spec, name) for name in _SYNTHETIC_KEY_FIELDS}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    version = SCENE_GENERATOR_VERSION if spec.kind == "synthetic_scenes" else GENERATOR_VERSION
    return cache_dir() / "data" / f"{spec.kind}-{digest}-v{version}.store"


def _real_store_path(spec: DataSpec, snapshot: str) -> Path:
    return cache_dir() / "data" / f"{spec.kind}-{snapshot}-r{READER_VERSION}.store"


def pin_snapshot(spec: DataSpec) -> DataSpec:
    """`spec` with its files' current version pinned, so that every trial and worker of a
    search trains on that version; synthetic data are returned as they are."""
    if spec.kind not in REAL_KINDS or spec.snapshot is not None:
        return spec
    return dataclasses.replace(spec, snapshot=source_fingerprint(spec))


def _load_real(spec: DataSpec) -> ImageDataset:
    """Decodes data on disk once per node (keyed by file listing and settings), then splits."""
    # Listing the files once: at tens of thousands of files it is not free.
    snapshot = spec.snapshot or source_fingerprint(spec)
    path = _real_store_path(spec, snapshot)

    def decode(target: Path) -> None:
        if source_fingerprint(spec) != snapshot:
            raise DataError(
                f"dataset.path: the files under {spec.path} changed after this search pinned"
                " them; resume or rerun the search to train on the new files"
            )
        decode_source(spec, target)
        # A file replaced while it was being read would mix two versions in one store.
        if source_fingerprint(spec) != snapshot:
            target.unlink(missing_ok=True)
            raise DataError(
                f"dataset.path: files under {spec.path} changed while they were decoded; run"
                " again once they stay unchanged"
            )

    required = ("pixels", "labels") + ("masks",) * bool(spec.mask_column)
    store = cached_store(path, decode, required + ("detections",) * bool(spec.boxes_column))
    report_skipped(spec, store.lists["skipped"])
    num_classes = check_num_classes(spec.num_classes, _decoded_classes(spec, store))
    labels = store["labels"]
    generator = torch.Generator().manual_seed(_stream_seed(spec))
    val_mask = _val_mask(labels, num_classes, spec.val_fraction, generator)
    if not 0 < int(val_mask.sum()) < labels.shape[0]:
        raise DataError(
            f"dataset.val_fraction: {labels.shape[0]} images leave an empty train or val split"
        )
    train_rows = torch.nonzero(~val_mask)[:, 0]
    val_rows = torch.nonzero(val_mask)[:, 0]
    return _dataset(spec, store, path, train_rows, val_rows, num_classes)


def _dataset(
    spec: DataSpec,
    store: Store,
    path: Path,
    train_rows: torch.Tensor,
    val_rows: torch.Tensor,
    num_classes: int,
) -> ImageDataset:
    samples = Samples(
        pixels=store["pixels"],
        labels=store["labels"],
        masks=store.get("masks"),
        detections=store.get("detections"),
    )
    train_rows, val_rows = train_rows.to(torch.int64), val_rows.to(torch.int64)
    normalization = _normalization(spec, samples.pixels, train_rows, path)
    return ImageDataset(
        train=Split(samples, train_rows, normalization, spec.augmentation),
        val=Split(samples, val_rows, normalization),
        num_classes=num_classes,
    )


def _decoded_classes(spec: DataSpec, store: Store) -> SourceInfo:
    """The classes the decoded targets use: names, or the largest id any target holds."""
    labels = store["labels"]
    if torch.unique(labels).numel() < 2:
        raise DataError(
            f"dataset.path: the readable samples of {spec.path} hold one class only; a"
            " classifier needs at least two"
        )
    if store.lists["classes"]:
        count = len(store.lists["classes"])
        found = "class folders" if spec.kind == "image_folder" else "distinct labels"
        return SourceInfo(count, True, (), f"{count} {found}")
    largest = int(labels.max())
    if (detections := store.get("detections")) is not None:
        largest = max(largest, int(detections[..., 4].max()))
    if (masks := store.get("masks")) is not None:
        largest = max(largest, int(masks.max()) - 1)
    return SourceInfo(largest + 1, False, (), f"class ids up to {largest} in labels or targets")


def _normalization(
    spec: DataSpec, pixels: torch.Tensor, train_rows: torch.Tensor, path: Path
) -> Normalization:
    """ImageNet's statistics, or the training split's own, computed once per node."""
    if spec.normalize == "imagenet":
        return Normalization.from_statistics(
            torch.tensor(IMAGENET_MEAN, dtype=torch.float64),
            torch.tensor(IMAGENET_STD, dtype=torch.float64),
        )
    digest = hashlib.sha256(train_rows.numpy().tobytes()).hexdigest()[:16]
    cached_at = path.parent.parent / "statistics" / f"{path.stem}-{digest}.json"
    cached = read_json(cached_at)
    if isinstance(cached, dict) and {"scale", "shift"} <= cached.keys():
        return Normalization(tuple(cached["scale"]), tuple(cached["shift"]))
    # Exact integer histograms keep the statistics independent of thread count, sum order
    # and chunking; one chunk of rows at a time, so the data are never held whole.
    counts = torch.zeros(3, 256, dtype=torch.int64)
    for rows in torch.split(train_rows, _STATISTICS_CHUNK):
        block = pixels[rows]
        for channel in range(3):
            counts[channel] += torch.bincount(block[:, channel].flatten(), minlength=256)
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    totals = counts.sum(dim=1).to(torch.float64)
    mean = (counts * levels).sum(dim=1) / totals
    std = ((counts * (levels - mean[:, None]) ** 2).sum(dim=1) / totals).sqrt().clamp_min(1e-3)
    normalization = Normalization.from_statistics(mean, std)
    write_json(cached_at, {"scale": normalization.scale, "shift": normalization.shift})
    return normalization


def _stream_seed(spec: DataSpec) -> int:
    """Derives a per-kind sample stream so that the two tasks never share random draws."""
    material = f"{spec.kind}:{spec.seed}".encode()
    return int.from_bytes(hashlib.sha256(material).digest()[:8], "little") & (2**63 - 1)


def _generate(spec: DataSpec, path: Path) -> None:
    """Renders every image into a new store at `path`, with the train/val split's rows."""
    generator = torch.Generator().manual_seed(_stream_seed(spec))
    num_classes = spec.num_classes or 0
    # Balanced classes; the permutation decorrelates class from generation order.
    labels = torch.randperm(spec.num_samples, generator=generator) % num_classes
    shape = (spec.num_samples, 3, spec.image_size, spec.image_size)
    writer = StoreWriter(path, {"pixels": (np.uint8, shape)})
    try:
        extra: dict[str, np.ndarray] = {}
        if spec.kind == "synthetic_scenes":
            scenes = render_scenes(labels, spec.image_size, num_classes, generator)
            writer.array("pixels")[:] = scenes.images.numpy()
            extra = {"masks": scenes.masks.numpy(), "detections": scenes.detections.numpy()}
        else:
            render_signs(spec.kind, num_classes, labels, generator, writer.array("pixels"))
        val_mask = _val_mask(labels, num_classes, spec.val_fraction, generator)
        extra |= {
            "labels": labels.numpy(),
            "train_rows": torch.nonzero(~val_mask)[:, 0].numpy(),
            "val_rows": torch.nonzero(val_mask)[:, 0].numpy(),
        }
        writer.finish(spec.num_samples, extra=extra)
    except BaseException:
        writer.abort()
        raise


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
    val_mask[round_robin[: num_val(count, val_fraction)]] = True
    return val_mask
