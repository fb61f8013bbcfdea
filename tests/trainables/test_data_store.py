"""The node's store: one mapped uint8 copy, per-batch conversion, ImageNet conventions, and
data on disk that change while a search runs."""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from tests.trainables.test_real_data import make_folder
from trainables.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataError,
    DataSpec,
    _load,
    _readers,
    _store,
    iterate_task_batches,
    load_dataset,
    pin_snapshot,
    store_path,
)

SIGNS = DataSpec(num_samples=240, image_size=16, num_classes=6)


def _folder_spec(root: Path, **changes) -> DataSpec:
    return DataSpec(kind="image_folder", path=str(root), image_size=16, num_classes=None, **changes)


def _mapped_files() -> str:
    """This process's memory mappings (Linux)."""
    return Path("/proc/self/maps").read_text()


@pytest.mark.usefixtures("fresh_cache")
@pytest.mark.parametrize("spec", [SIGNS, "folder"], ids=["synthetic", "image_folder"])
def test_samples_are_one_read_only_uint8_mapping_of_the_store(tmp_path: Path, spec) -> None:
    if spec == "folder":
        spec = _folder_spec(make_folder(tmp_path / "signs"))
    dataset = load_dataset(spec)
    pixels = dataset.train.samples.pixels

    assert pixels.dtype == torch.uint8
    # Both splits read the same rows of one array: nothing was copied per split.
    assert dataset.val.samples.pixels is pixels
    assert not set(dataset.train.rows.tolist()) & set(dataset.val.rows.tolist())
    # The array is the store file's pages, mapped read-only and shared, not a copy.
    mappings = [line.split() for line in _mapped_files().splitlines()]
    permissions = {fields[1] for fields in mappings if fields[-1] == str(store_path(spec))}
    assert permissions == {"r--s"}


@pytest.mark.usefixtures("fresh_cache")
def test_batches_are_converted_and_normalised_per_batch_as_the_whole_split() -> None:
    dataset = load_dataset(dataclasses.replace(SIGNS, hflip=False))
    split = dataset.train
    generator = torch.Generator().manual_seed(0)
    batches = list(iterate_task_batches(split, 32, shuffle=True, generator=generator))
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))

    images = torch.cat([images for images, _ in batches])
    labels = torch.cat([targets["cls"] for _, targets in batches])
    assert images.dtype == torch.float32
    # Bit for bit what normalising the whole split first would give.
    assert torch.equal(images, split.images[order])
    assert torch.equal(labels, split.labels[order])
    # Data statistics: the training split comes out standardised.
    per_channel = split.images.transpose(0, 1).flatten(1)
    assert per_channel.mean(dim=1).abs().max() < 1e-4
    assert (per_channel.std(dim=1) - 1).abs().max() < 1e-2


@pytest.mark.usefixtures("fresh_cache")
def test_imagenet_normalisation_uses_imagenet_mean_and_std(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "signs")
    dataset = load_dataset(_folder_spec(root, normalize="imagenet"))
    first = dataset.train.rows[0]
    label = int(dataset.train.samples.labels[first])
    pixel = dataset.train.samples.pixels[first, :, 0, 0].double() / 255
    expected = (pixel - torch.tensor(IMAGENET_MEAN).double()) / torch.tensor(IMAGENET_STD).double()

    images, targets = next(iterate_task_batches(dataset.train, 4, shuffle=False, generator=None))
    assert int(targets["cls"][0]) == label
    assert torch.allclose(images[0, :, 0, 0].double(), expected, atol=1e-5)
    # The decoded store is shared with data normalisation: only the statistics differ.
    other = load_dataset(_folder_spec(root, normalize="data"))
    assert other.train.samples.pixels.data_ptr() != 0
    assert store_path(_folder_spec(root)) == store_path(_folder_spec(root, normalize="imagenet"))


def _bands(width: int, height: int) -> Image.Image:
    """Red where x < width / 4 or x >= 3 width / 4, green between."""
    array = np.zeros((height, width, 3), np.uint8)
    array[:, :, 0] = 255
    quarter = width // 4
    array[:, quarter : width - quarter] = (0, 255, 0)
    return Image.fromarray(array)


@pytest.mark.usefixtures("fresh_cache")
def test_shorter_side_resize_keeps_the_aspect_ratio_and_crops_the_centre(tmp_path: Path) -> None:
    root = tmp_path / "bands"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for index in range(4):
            _bands(64, 32).save(root / name / f"{index}.png")

    squashed = load_dataset(_folder_spec(root)).train.samples.pixels[0]
    cropped = load_dataset(_folder_spec(root, resize="shorter_side")).train.samples.pixels[0]

    # Squashed, the red bands stay at both edges; cropped to the centre half, only green.
    assert squashed[0, :, 0].float().mean() > 200 and squashed[1, :, 0].float().mean() < 50
    assert cropped[1].float().mean() > 250 and cropped[0].float().mean() < 5


@pytest.mark.usefixtures("fresh_cache")
def test_shorter_side_moves_masks_and_boxes_and_drops_boxes_cropped_away(tmp_path: Path) -> None:
    rows = []
    for label in (0, 1, 0, 1):
        image = io.BytesIO()
        Image.new("RGB", (64, 32), (10, 20, 30)).save(image, format="PNG")
        mask = np.zeros((32, 64), np.uint8)
        mask[8:24, 24:40] = label + 1  # a centre square, inside the crop
        encoded = io.BytesIO()
        Image.fromarray(mask).save(encoded, format="PNG")
        # The centre square, and a box at the far left, which the centre crop removes.
        boxes = [[24, 8, 40, 24, label], [0, 0, 8, 8, label]]
        rows.append(
            {"image": image.getvalue(), "label": label, "mask": encoded.getvalue(), "boxes": boxes}
        )
    path = tmp_path / "scenes.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    spec = DataSpec(
        kind="parquet",
        path=str(path),
        image_size=16,
        num_classes=2,
        mask_column="mask",
        boxes_column="boxes",
        resize="shorter_side",
        val_fraction=0.5,
    )
    split = load_dataset(spec).train

    # 64x32 -> 32x16, then columns 8..24 kept: the square spans x 4..12, y 4..12.
    mask = split.masks[0]
    assert torch.nonzero(mask).min(dim=0).values.tolist() == [4, 4]
    assert torch.nonzero(mask).max(dim=0).values.tolist() == [11, 11]
    boxes = split.detections[0]
    kept = boxes[boxes[:, 4] >= 0]
    assert kept.tolist() == [[4.0, 4.0, 12.0, 12.0, float(split.labels[0])]]


@pytest.mark.usefixtures("fresh_cache")
def test_a_pinned_search_keeps_training_on_its_version_of_the_files(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "signs")
    pinned = pin_snapshot(_folder_spec(root))
    before = load_dataset(pinned).train.images.clone()

    # A file changes after the search pinned and decoded the data: trials still read the
    # pinned store, never a mix.
    Image.new("RGB", (20, 12), (0, 0, 0)).save(root / "alpha" / "img00.png")
    load_dataset.cache_clear()
    assert torch.equal(load_dataset(pinned).train.images, before)
    assert pin_snapshot(_folder_spec(root)).snapshot != pinned.snapshot

    # On a node without that store, the changed files are refused in one line.
    store_path(pinned).unlink()
    load_dataset.cache_clear()
    with pytest.raises(DataError, match="changed after this search pinned them"):
        load_dataset(pinned)


def test_files_that_change_while_they_are_decoded_leave_no_store(
    fresh_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_folder(tmp_path / "signs")
    decode = _readers.decode_source

    def decode_then_touch(spec: DataSpec, path: Path) -> None:
        decode(spec, path)
        later = os.stat(root / "bravo" / "img02.png").st_mtime_ns + 10**9
        os.utime(root / "bravo" / "img02.png", ns=(later, later))

    monkeypatch.setattr(_load, "decode_source", decode_then_touch)
    with pytest.raises(DataError, match="changed while they were decoded"):
        load_dataset(_folder_spec(root))
    assert not [p for p in (fresh_cache / "data").iterdir() if p.suffix == ".store"]


@pytest.mark.usefixtures("fresh_cache")
def test_a_store_that_would_not_fit_the_disk_is_refused_before_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_folder(tmp_path / "signs")
    full = _store.shutil.disk_usage(tmp_path)._replace(free=2**20)
    monkeypatch.setattr(_store.shutil, "disk_usage", lambda folder: full)
    with pytest.raises(DataError, match=r"decoding needs 0\.06 GiB free in .*, which has 0\.00"):
        load_dataset(_folder_spec(root))
    assert not list((Path(os.environ["PHASETUNE_CACHE_DIR"]) / "data").iterdir())


@pytest.mark.usefixtures("fresh_cache")
def test_data_on_a_device_is_moved_as_uint8_once_for_both_splits(tmp_path: Path) -> None:
    dataset = load_dataset(_folder_spec(make_folder(tmp_path / "signs")))
    moved = dataset.to(torch.device("meta"))
    assert moved.train.samples is moved.val.samples  # one copy, as on the host
    assert moved.train.samples.pixels.device.type == "meta"
    assert moved.train.samples.pixels.dtype == torch.uint8
    assert torch.equal(moved.train.rows, dataset.train.rows)
    assert moved.nbytes == dataset.nbytes == dataset.train.samples.pixels.numel() + 8 * 24
