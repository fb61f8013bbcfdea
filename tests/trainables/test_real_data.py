"""Data sets read from disk: class folders and Parquet tables, their cache and augmentation."""

from __future__ import annotations

import dataclasses
import io
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from analysis.targets import NSL
from tests.conftest import TINY_MODEL
from trainables.augment import Augmentation, augment_batch
from trainables.data import DataError, DataSpec, _load, _readers, iterate_task_batches, load_dataset
from trainables.engine import EngineContext, run_plan
from trainables.phases import LRSchedule, Phase, PhasePlan

CLASSES = ("alpha", "bravo", "charlie")
PER_CLASS = 8
# Each class has its own colour, so labels can be checked from pixels.
COLOURS = {"alpha": (220, 30, 30), "bravo": (30, 220, 30), "charlie": (30, 30, 220)}


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (20, 12)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def make_folder(root: Path, classes: tuple[str, ...] = CLASSES) -> Path:
    """class-per-folder PNGs and JPEGs of varying sizes, one colour per class."""
    for name in classes:
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(PER_CLASS):
            suffix = ".jpg" if i % 4 == 3 else ".png"
            image = Image.new("RGB", (20 + i, 12 + 2 * i), COLOURS[name])
            image.save(folder / f"img{i:02d}{suffix}")
    return root


def make_parquet(path: Path, *, corrupt_row: int | None = None) -> Path:
    """A 24-row table: a 2-class image label, a mask with one square object and its box."""
    images, labels, masks, boxes = [], [], [], []
    for row in range(24):
        label = row % 2
        image = np.zeros((16, 32, 3), np.uint8)  # height 16, width 32
        x0 = 2 + row % 10
        image[4:12, x0 : x0 + 8] = (200, 200, 50) if label else (50, 200, 200)
        mask = np.zeros((16, 32), np.uint8)
        mask[4:12, x0 : x0 + 8] = label + 1
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        mask_buffer = io.BytesIO()
        Image.fromarray(mask, mode="L").save(mask_buffer, format="PNG")
        images.append(buffer.getvalue()[:40] if row == corrupt_row else buffer.getvalue())
        labels.append(label)
        masks.append(mask_buffer.getvalue())
        boxes.append([[float(x0), 4.0, float(x0 + 8), 12.0, float(label)]])
    table = pa.table(
        {
            "image": pa.array(images, pa.binary()),
            "label": pa.array(labels, pa.int64()),
            "mask": pa.array(masks, pa.binary()),
            "boxes": pa.array(boxes, pa.list_(pa.list_(pa.float64()))),
        }
    )
    pq.write_table(table, path)
    return path


def folder_spec(root: Path, **changes) -> DataSpec:
    base = DataSpec(kind="image_folder", path=str(root), image_size=16, num_classes=None)
    return dataclasses.replace(base, **changes)


def parquet_spec(path: Path, **changes) -> DataSpec:
    base = DataSpec(
        kind="parquet",
        path=str(path),
        image_size=16,
        num_classes=None,
        mask_column="mask",
        boxes_column="boxes",
        val_fraction=0.25,
    )
    return dataclasses.replace(base, **changes)


@pytest.mark.usefixtures("fresh_cache")
def test_labels_follow_sorted_class_folders_and_images_are_resized(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "signs", classes=("charlie", "alpha", "bravo"))
    dataset = load_dataset(folder_spec(root))

    assert dataset.num_classes == 3
    assert dataset.tasks == ("cls",)
    total = len(dataset.train) + len(dataset.val)
    assert total == 3 * PER_CLASS
    # Stratified: every class in both splits.
    assert set(dataset.val.labels.tolist()) == {0, 1, 2}
    for split in (dataset.train, dataset.val):
        assert split.images.shape == (len(split), 3, 16, 16)
        assert split.images.dtype == torch.float32
        # Images are standardised per channel; the dominant channel names the class:
        # alpha (label 0) is red, bravo (1) green, charlie (2) blue.
        dominant = split.images.mean(dim=(2, 3)).argmax(dim=1)
        assert torch.equal(dominant, split.labels)


@pytest.mark.usefixtures("fresh_cache")
def test_num_classes_mismatch_names_the_field_and_the_fix(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "signs")
    with pytest.raises(DataError) as raised:
        load_dataset(folder_spec(root, num_classes=5))
    message = str(raised.value)
    assert message.startswith("dataset.num_classes: is 5 but the data has 3 class folders")
    assert "set it to 3" in message and "\n" not in message
    assert load_dataset(folder_spec(root, num_classes=3)).num_classes == 3


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:30])
    return path


@pytest.mark.usefixtures("fresh_cache")
def test_corrupt_image_is_refused_by_default_naming_its_path(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "signs")
    bad = _truncate(root / "bravo" / "img02.png")
    with pytest.raises(DataError) as raised:
        load_dataset(folder_spec(root))
    message = str(raised.value)
    assert message.startswith(f"dataset.path: cannot read {bad} (")
    assert "dataset.on_corrupt: skip" in message and "\n" not in message


@pytest.mark.usefixtures("fresh_cache")
def test_skip_leaves_corrupt_images_out_and_warns_naming_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_folder(tmp_path / "signs")
    bad = [_truncate(root / "alpha" / "img01.png"), root / "charlie" / "img05.png"]
    bad[1].write_bytes(b"not an image at all")
    with caplog.at_level(logging.WARNING, logger="trainables.data._readers"):
        dataset = load_dataset(folder_spec(root, on_corrupt="skip"))

    assert len(dataset.train) + len(dataset.val) == 3 * PER_CLASS - 2
    labels = torch.cat([dataset.train.labels, dataset.val.labels])
    assert torch.bincount(labels).tolist() == [PER_CLASS - 1, PER_CLASS, PER_CLASS - 1]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "left out 2 unreadable sample(s)" in warning
    assert all(str(path) in warning for path in bad)

    # The cache remembers what was skipped: asking for "error" now refuses the data set.
    load_dataset.cache_clear()
    with pytest.raises(DataError, match="cannot read .*img01.png"):
        load_dataset(folder_spec(root, on_corrupt="error"))


def test_decoded_data_are_cached_and_the_decoder_is_not_called_again(
    fresh_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_folder(tmp_path / "signs")
    calls = []
    decode = _readers.decode_source

    def counting(spec: DataSpec, path: Path) -> None:
        calls.append(spec)
        decode(spec, path)

    monkeypatch.setattr(_load, "decode_source", counting)
    first = load_dataset(folder_spec(root))
    load_dataset.cache_clear()
    # A different seed, split or augmentation reuses the decoded images.
    second = load_dataset(folder_spec(root, seed=1, val_fraction=0.3, hflip=True))
    again = load_dataset(folder_spec(root))

    assert len(calls) == 1
    assert [p.name for p in (fresh_cache / "data").iterdir()][0].startswith("image_folder-")
    assert torch.equal(first.train.images, again.train.images)
    assert len(second.val) == round(0.3 * 3 * PER_CLASS)

    # A changed file changes the cache key, so the data are decoded again.
    load_dataset.cache_clear()
    Image.new("RGB", (9, 9), (1, 2, 3)).save(root / "alpha" / "extra.png")
    load_dataset(folder_spec(root))
    assert len(calls) == 2
    # Another image size too.
    load_dataset(folder_spec(root, image_size=12))
    assert len(calls) == 3


@pytest.mark.usefixtures("fresh_cache")
def test_concurrent_loaders_on_a_node_wait_for_one_decode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_folder(tmp_path / "signs")
    calls = []
    decode = _readers.decode_source

    def slow(spec: DataSpec, path: Path) -> None:
        calls.append(spec)
        time.sleep(0.3)  # long enough for the other loaders to reach the lock
        decode(spec, path)

    monkeypatch.setattr(_load, "decode_source", slow)
    # Three trials with different seeds: separate in-process entries, one set of files.
    specs = [folder_spec(root, seed=seed) for seed in range(3)]
    with ThreadPoolExecutor(3) as pool:
        datasets = list(pool.map(load_dataset, specs))

    assert len(calls) == 1
    assert all(len(d.train) + len(d.val) == 3 * PER_CLASS for d in datasets)


@pytest.mark.usefixtures("fresh_cache")
def test_parquet_masks_and_boxes_round_trip(tmp_path: Path) -> None:
    path = make_parquet(tmp_path / "scenes.parquet")
    spec = parquet_spec(path)
    dataset = load_dataset(spec)

    assert spec.tasks == dataset.tasks == ("cls", "seg", "det")
    assert dataset.num_classes == 2
    for split in (dataset.train, dataset.val):
        assert split.masks.shape == (len(split), 16, 16)
        assert split.detections.shape == (len(split), 1, 5)
        for mask, box, label in zip(split.masks, split.detections, split.labels, strict=True):
            x1, y1, x2, y2, cls = box[0].tolist()
            # Width 32 -> 16 halves x; height 16 stays.
            assert (y1, y2) == (4.0, 12.0) and x2 - x1 == 4.0 and cls == label
            assert set(mask.unique().tolist()) == {0, int(label) + 1}
            inside = mask[int(y1) : int(y2), int(x1) : int(x2)]
            assert (inside == label + 1).all()
            assert int((mask > 0).sum()) == inside.numel()


@pytest.mark.usefixtures("fresh_cache")
def test_parquet_folder_string_labels_and_a_corrupt_row(tmp_path: Path) -> None:
    folder = tmp_path / "table"
    folder.mkdir()
    make_parquet(folder / "part-0.parquet", corrupt_row=5)
    table = pq.read_table(folder / "part-0.parquet")
    names = pa.array(["dog" if v else "cat" for v in table.column("label").to_pylist()])
    pq.write_table(table.set_column(1, "label", names), folder / "part-0.parquet")
    spec = parquet_spec(folder, mask_column=None, boxes_column=None)

    with pytest.raises(DataError, match=r"part-0.parquet row 5 \("):
        load_dataset(spec)
    dataset = load_dataset(dataclasses.replace(spec, on_corrupt="skip"))
    assert dataset.tasks == ("cls",)
    assert dataset.num_classes == 2  # cat, dog
    assert len(dataset.train) + len(dataset.val) == 23
    with pytest.raises(DataError, match="dataset.num_classes: is 3 but the data has 2 distinct"):
        load_dataset(dataclasses.replace(spec, on_corrupt="skip", num_classes=3))


@pytest.mark.usefixtures("fresh_cache")
def test_integer_labels_allow_more_classes_but_not_fewer(tmp_path: Path) -> None:
    path = make_parquet(tmp_path / "scenes.parquet")
    assert load_dataset(parquet_spec(path, num_classes=4)).num_classes == 4
    with pytest.raises(DataError, match="at least 2"):
        _readers.check_num_classes(1, _readers.inspect_source("parquet", str(path)))


def test_spec_validation_for_data_on_disk(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="path"):
        DataSpec(kind="image_folder", num_classes=None)
    with pytest.raises(ValueError, match="on_corrupt"):
        DataSpec(kind="image_folder", path="x", on_corrupt="ignore")
    with pytest.raises(ValueError, match="multiple of 4"):
        DataSpec(kind="parquet", path="x", image_size=18, mask_column="mask")
    with pytest.raises(ValueError, match="parquet"):
        DataSpec(kind="image_folder", path="x", boxes_column="boxes")
    spec = DataSpec(kind="parquet", path="x", num_classes=None, boxes_column="b", hflip=True)
    assert spec.tasks == ("cls", "det")
    assert DataSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(DataError, match="does not exist"):
        _readers.inspect_source("image_folder", str(tmp_path / "missing"))


def _scene_batch() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    masks = torch.zeros(2, 8, 8, dtype=torch.int64)
    masks[:, 2:4, 1:3] = 1
    boxes = torch.tensor([[[1.0, 2.0, 3.0, 4.0, 0.0], [-1, -1, -1, -1, -1]]]).repeat(2, 1, 1)
    return images, {"cls": torch.tensor([0, 1]), "seg": masks, "det": boxes}


def test_flip_moves_masks_and_boxes_with_the_image() -> None:
    images, targets = _scene_batch()
    flipped_any = False
    for seed in range(6):
        generator = torch.Generator().manual_seed(seed)
        out, moved = augment_batch(images, targets, Augmentation(hflip=True), generator)
        for i in range(2):
            flipped = not torch.equal(out[i], images[i])
            flipped_any |= flipped
            if flipped:
                assert torch.equal(out[i], images[i].flip(-1))
                assert torch.equal(moved["seg"][i], targets["seg"][i].flip(-1))
                assert moved["det"][i, 0].tolist() == [5.0, 2.0, 7.0, 4.0, 0.0]
            else:
                assert torch.equal(moved["det"][i], targets["det"][i])
            assert moved["det"][i, 1].tolist() == [-1.0] * 5
        assert torch.equal(moved["cls"], targets["cls"])
    assert flipped_any


def test_resized_crop_is_seeded_and_keeps_targets_consistent() -> None:
    images, targets = _scene_batch()
    augmentation = Augmentation(hflip=True, crop_scale=0.5)
    first = augment_batch(images, targets, augmentation, torch.Generator().manual_seed(3))
    second = augment_batch(images, targets, augmentation, torch.Generator().manual_seed(3))
    other = augment_batch(images, targets, augmentation, torch.Generator().manual_seed(4))

    assert torch.equal(first[0], second[0]) and torch.equal(first[1]["det"], second[1]["det"])
    assert not torch.equal(first[0], other[0])
    assert first[0].shape == images.shape and first[1]["seg"].shape == (2, 8, 8)
    for mask, box in zip(first[1]["seg"], first[1]["det"], strict=True):
        if box[0, 4] < 0:
            continue
        x1, y1, x2, y2 = box[0, :4].tolist()
        assert 0 <= x1 < x2 <= 8 and 0 <= y1 < y2 <= 8
        # The moved mask's object lies within a pixel of the moved box.
        ys, xs = torch.nonzero(mask, as_tuple=True)
        if len(xs):
            assert xs.min() >= x1 - 1 and xs.max() + 1 <= x2 + 1
            assert ys.min() >= y1 - 1 and ys.max() + 1 <= y2 + 1


@pytest.mark.usefixtures("fresh_cache")
def test_augmentation_is_train_only_and_seeded(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "signs")
    dataset = load_dataset(folder_spec(root, hflip=True, crop_scale=0.6))
    assert dataset.train.augmentation == Augmentation(hflip=True, crop_scale=0.6)
    assert dataset.val.augmentation is None

    def epoch(split, seed):
        generator = torch.Generator().manual_seed(seed)
        return torch.cat(
            [b for b, _ in iterate_task_batches(split, 8, shuffle=True, generator=generator)]
        )

    assert torch.equal(epoch(dataset.train, 0), epoch(dataset.train, 0))
    in_order = torch.cat(
        [b for b, _ in iterate_task_batches(dataset.train, 8, shuffle=False, generator=None)]
    )
    assert not torch.equal(in_order, dataset.train.images)  # augmented
    val = torch.cat(
        [b for b, _ in iterate_task_batches(dataset.val, 8, shuffle=False, generator=None)]
    )
    assert torch.equal(val, dataset.val.images)  # never augmented


class Reporter:
    """Keeps the metrics of every report."""

    rank, world_size = 0, 1

    def __init__(self) -> None:
        self.reports: list[dict] = []

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        self.reports.append(dict(metrics))

    def restore(self) -> None:
        return None


@pytest.mark.usefixtures("fresh_cache")
def test_a_tiny_plan_trains_on_an_image_folder(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "signs")
    data = folder_spec(root, hflip=True)
    plan = PhasePlan(
        strategy="single_phase",
        phases=(Phase(name="all", epochs=2, trainable="all", lr=3e-3, lr_schedule=LRSchedule()),),
        model=dataclasses.replace(TINY_MODEL, pretrained=None),
        data=data,
        batch_size=8,
    )
    reporter = Reporter()
    run_plan(
        PhasePlan.from_dict(plan.to_dict()), EngineContext(targets=NSL.targets, threads=1), reporter
    )
    assert [r["epoch"] for r in reporter.reports] == [1, 2]
    assert 0.0 <= reporter.reports[-1]["val/acc"] <= 1.0
    assert np.isfinite(reporter.reports[-1]["val/loss"])


@pytest.mark.usefixtures("fresh_cache")
def test_a_multitask_plan_trains_on_augmented_parquet_masks_and_boxes(tmp_path: Path) -> None:
    data = parquet_spec(make_parquet(tmp_path / "scenes.parquet"), hflip=True, crop_scale=0.7)
    plan = PhasePlan(
        strategy="joint",
        phases=(Phase(name="joint", epochs=1, trainable="all", lr=1e-3, tasks=data.tasks),),
        model=dataclasses.replace(TINY_MODEL, pretrained=None),
        data=data,
        batch_size=8,
    )
    reporter = Reporter()
    run_plan(plan, EngineContext(targets=NSL.targets, threads=1), reporter)
    (last,) = reporter.reports
    for metric in ("val/cls_acc", "val/seg_miou", "val/det_map50"):
        assert np.isfinite(last[metric]), metric
