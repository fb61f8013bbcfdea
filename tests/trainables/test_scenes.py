"""Tests for the synthetic scenes: masks, boxes, image-level labels and task batches."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from trainables.data import (
    MAX_OBJECTS,
    TASKS_BY_KIND,
    DataSpec,
    Normalization,
    Samples,
    Split,
    iterate_batches,
    iterate_task_batches,
    load_dataset,
    shard_for_eval,
    tasks_for_kind,
)
from trainables.data._store import StoreWriter, open_store
from trainables.scenes import SCENE_CLASSES, SCENE_GENERATOR_VERSION, _keep_visible

SCENES = DataSpec(kind="synthetic_scenes", num_samples=400, image_size=32, num_classes=10, seed=0)
TINY_SCENES = dataclasses.replace(SCENES, num_samples=120, image_size=16, num_classes=4)
SIGNS = DataSpec(num_samples=120, image_size=16, num_classes=6)
#: What a scene split holds; every one must survive caching and sharding.
TENSOR_FIELDS = ("images", "labels", "masks", "detections")


def numbered_split(size: int) -> Split:
    """A scene-like split whose every target holds the sample's index."""
    index = torch.arange(size)
    samples = Samples(
        pixels=torch.zeros(size, 3, 4, 4, dtype=torch.uint8),
        labels=index,
        masks=index[:, None, None].expand(size, 4, 4),
        detections=index[:, None, None].expand(size, MAX_OBJECTS, 5).float(),
    )
    return Split(samples, index, Normalization((1.0,) * 3, (0.0,) * 3))


def box_pixels(split: Split) -> torch.Tensor:
    """(N, K, H, W): whether each pixel lies in each detection row's box."""
    size = split.masks.shape[-1]
    positions = torch.arange(size)
    x1, y1, x2, y2 = (split.detections[..., i, None].long() for i in range(4))
    in_columns = (positions >= x1) & (positions < x2)
    in_rows = (positions >= y1) & (positions < y2)
    return in_rows[..., :, None] & in_columns[..., None, :]


@pytest.mark.usefixtures("fresh_cache")
def test_same_spec_gives_identical_scenes_even_after_clearing_caches(tmp_path: Path) -> None:
    first = load_dataset(SCENES)
    load_dataset.cache_clear()
    for cached in (tmp_path / "data").iterdir():
        cached.unlink()
    second = load_dataset(SCENES)
    other_seed = load_dataset(dataclasses.replace(SCENES, seed=1))

    assert first is not second
    for split in ("train", "val"):
        for field in TENSOR_FIELDS:
            a = getattr(getattr(first, split), field)
            b = getattr(getattr(second, split), field)
            assert torch.equal(a, b), (split, field)
    assert not torch.equal(first.train.images, other_seed.train.images)


def test_disk_cache_keeps_masks_and_detections(fresh_cache: Path) -> None:
    generated = load_dataset(TINY_SCENES)
    (cached,) = (fresh_cache / "data").iterdir()
    assert cached.name.startswith("synthetic_scenes-")
    assert cached.name.endswith(f"-v{SCENE_GENERATOR_VERSION}.store")
    stored = open_store(cached)
    assert stored["masks"].dtype == torch.uint8

    load_dataset.cache_clear()
    stamp = cached.stat().st_mtime_ns
    reloaded = load_dataset(TINY_SCENES)
    assert cached.stat().st_mtime_ns == stamp  # read back, not rewritten
    assert torch.equal(generated.val.masks, reloaded.val.masks)
    assert torch.equal(generated.val.detections, reloaded.val.detections)

    # A file without the scene arrays is not trusted; it is regenerated.
    without_masks = {k: v.numpy() for k, v in stored.arrays.items() if k != "masks"}
    StoreWriter(cached, {}).finish(0, extra=without_masks)
    load_dataset.cache_clear()
    assert torch.equal(load_dataset(TINY_SCENES).train.masks, generated.train.masks)


@pytest.mark.usefixtures("fresh_cache")
@pytest.mark.parametrize("spec", [SCENES, TINY_SCENES], ids=["32px", "16px"])
def test_shapes_dtypes_and_tasks(spec: DataSpec) -> None:
    dataset = load_dataset(spec)
    size = spec.image_size

    assert dataset.num_classes == spec.num_classes
    assert dataset.tasks == TASKS_BY_KIND["synthetic_scenes"] == ("cls", "seg", "det")
    assert tasks_for_kind("synthetic_scenes") == dataset.tasks
    for split in (dataset.train, dataset.val):
        n = len(split)
        assert split.images.dtype == torch.float32
        assert split.images.shape == (n, 3, size, size)
        assert torch.isfinite(split.images).all()
        assert split.labels.dtype == split.masks.dtype == torch.int64
        assert split.labels.shape == (n,)
        assert split.masks.shape == (n, size, size)
        assert split.detections.dtype == torch.float32
        assert split.detections.shape == (n, MAX_OBJECTS, 5)
        assert int(split.masks.min()) >= 0 and int(split.masks.max()) <= spec.num_classes
        assert list(split.task_targets()) == ["cls", "seg", "det"]
        assert torch.equal(split.task_targets()["seg"], split.masks)
    per_channel = dataset.train.images.transpose(0, 1).flatten(1)
    assert per_channel.mean(dim=1).abs().max() < 1e-3
    assert (per_channel.std(dim=1) - 1.0).abs().max() < 1e-2


@pytest.mark.usefixtures("fresh_cache")
@pytest.mark.parametrize("spec", [SCENES, TINY_SCENES], ids=["32px", "16px"])
def test_boxes_are_tight_around_the_mask_pixels_of_their_class(spec: DataSpec) -> None:
    split = load_dataset(spec).train
    detections, masks = split.detections, split.masks
    valid = detections[..., 4] >= 0
    in_box = box_pixels(split)
    of_class = masks[:, None] == detections[..., 4, None, None].long() + 1

    # Padding: whole rows of -1, after every real row; every scene has 1..K objects.
    assert (detections[~valid] == -1).all()
    assert torch.equal(valid, valid.cummin(dim=1).values)
    assert valid.any(dim=1).all()
    # Every object pixel lies in a box of its class.
    covered = (in_box & of_class & valid[..., None, None]).any(dim=1)
    assert torch.equal(covered, masks > 0)
    # Each box is the bounding box of its class's pixels inside it: pixels touch all 4 sides.
    hits = in_box & of_class
    x1, y1, x2, y2 = detections[valid][:, :4].long().unbind(1)
    columns, rows = hits[valid].any(dim=1), hits[valid].any(dim=2)
    count = int(valid.sum())
    assert columns[torch.arange(count), x1].all() and columns[torch.arange(count), x2 - 1].all()
    assert rows[torch.arange(count), y1].all() and rows[torch.arange(count), y2 - 1].all()
    assert (x1 < x2).all() and (y1 < y2).all()
    assert int(x1.min()) >= 0 and int(x2.max()) <= spec.image_size


@pytest.mark.usefixtures("fresh_cache")
def test_label_is_the_class_of_the_clearly_largest_object() -> None:
    split = load_dataset(SCENES).train
    classes = split.detections[..., 4].long()
    valid = classes >= 0
    areas = torch.stack(
        [(split.masks == c + 1).sum(dim=(1, 2)) for c in range(SCENES.num_classes)], dim=1
    )
    # Where no class repeats within a scene, a class's mask area is its one object's area.
    sorted_classes = classes.sort(dim=1).values
    distinct = ~((sorted_classes[:, 1:] == sorted_classes[:, :-1]) & (sorted_classes[:, 1:] >= 0))
    distinct = distinct.all(dim=1)
    label_area = areas.gather(1, split.labels[:, None])[:, 0]
    other_area = areas.scatter(1, split.labels[:, None], 0).amax(dim=1)

    assert ((classes == split.labels[:, None]) & valid).any(dim=1).all()
    assert distinct.float().mean() > 0.7
    assert (label_area[distinct] >= 1.25 * other_area[distinct]).all()
    assert (valid.sum(dim=1) > 1).float().mean() > 0.5  # most scenes have distractors


def test_objects_hidden_too_much_or_as_large_as_the_primary_are_dropped() -> None:
    inside = torch.zeros(2, MAX_OBJECTS, 8, 8, dtype=torch.bool)
    inside[:, 0, :4, :4] = True  # the primary object, 16 pixels, on top
    inside[0, 1, 2:5, 2:5] = True  # 4 of 9 pixels hidden by the primary
    inside[0, 2, 6:, 6:] = True  # small and free
    inside[1, 1, 6, :] = True
    inside[1, 1, 7, :5] = True  # free, but 13 pixels: not clearly smaller than the primary
    inside[1, 2, 6:, 6:] = True  # inactive
    active = torch.tensor([[True, True, True], [True, True, False]])

    assert _keep_visible(inside, active).tolist() == [[True, False, True], [True, False, False]]


@pytest.mark.usefixtures("fresh_cache")
def test_classes_are_balanced_and_split_by_val_fraction() -> None:
    spec = dataclasses.replace(SCENES, val_fraction=0.25)
    dataset = load_dataset(spec)

    assert len(dataset.val) == round(spec.num_samples * spec.val_fraction)
    assert len(dataset.train) + len(dataset.val) == spec.num_samples
    labels = torch.cat([dataset.train.labels, dataset.val.labels])
    counts = torch.bincount(labels, minlength=spec.num_classes)
    assert int(counts.min()) == int(counts.max()) == spec.num_samples // spec.num_classes
    assert set(dataset.val.labels.tolist()) == set(range(spec.num_classes))


@pytest.mark.usefixtures("fresh_cache")
def test_colour_does_not_give_the_class_away() -> None:
    spec = dataclasses.replace(SCENES, num_samples=720, num_classes=6)
    split = load_dataset(spec).train
    images, labels = split.images, split.labels
    class_means = torch.stack([images[labels == c].mean(dim=(0, 2, 3)) for c in range(6)])
    spread_across_images = images.mean(dim=(2, 3)).std(dim=0)
    assert (class_means.std(dim=0) < 0.25 * spread_across_images).all()

    # The same holds for the pixels of the labelled object itself.
    object_pixels = (split.masks == labels[:, None, None] + 1)[:, None]
    object_colours = (images * object_pixels).sum(dim=(2, 3)) / object_pixels.sum(dim=(2, 3))
    object_means = torch.stack([object_colours[labels == c].mean(dim=0) for c in range(6)])
    assert (object_means.std(dim=0) < 0.25 * object_colours.std(dim=0)).all()


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_task_batches_follow_iterate_batches(world_size: int) -> None:
    split = numbered_split(53)
    for rank in range(world_size):
        plain_generator = torch.Generator().manual_seed(11)
        task_generator = torch.Generator().manual_seed(11)
        options = {"rank": rank, "world_size": world_size, "drop_last": True, "shuffle": True}
        plain = list(iterate_batches(split, 8, generator=plain_generator, **options))
        tasks = list(iterate_task_batches(split, 8, generator=task_generator, **options))

        assert len(plain) == len(tasks) > 0
        for (images, labels), (task_images, targets) in zip(plain, tasks, strict=True):
            assert torch.equal(images, task_images)
            assert list(targets) == ["cls", "seg", "det"]
            assert torch.equal(targets["cls"], labels)
            assert torch.equal(targets["seg"], split.masks[labels])
            assert torch.equal(targets["det"], split.detections[labels])
        assert torch.equal(plain_generator.get_state(), task_generator.get_state())
    with pytest.raises(ValueError, match="generator"):
        next(iterate_task_batches(split, 8, shuffle=True, generator=None, rank=0, world_size=2))


@pytest.mark.parametrize("world_size", [1, 2, 3, 7])
def test_shard_for_eval_carries_masks_and_detections(world_size: int) -> None:
    split = numbered_split(20)
    shards = [shard_for_eval(split, rank, world_size) for rank in range(world_size)]

    for field in TENSOR_FIELDS:
        parts = torch.cat([getattr(shard, field) for shard in shards])
        assert torch.equal(parts, getattr(split, field))
    for shard in shards:
        assert torch.equal(shard.masks[:, 0, 0], shard.labels)
        assert torch.equal(shard.detections[:, 0, 0].long(), shard.labels)


@pytest.mark.usefixtures("fresh_cache")
def test_old_kinds_have_classification_targets_only() -> None:
    dataset = load_dataset(SIGNS)
    split = dataset.train

    assert split.masks is None and split.detections is None
    assert dataset.tasks == tasks_for_kind("synthetic_signs") == ("cls",)
    assert tasks_for_kind("synthetic_source") == ("cls",)
    assert list(split.task_targets()) == ["cls"]
    images, targets = next(iterate_task_batches(split, 16, shuffle=False, generator=None))
    assert list(targets) == ["cls"] and torch.equal(targets["cls"], split.labels[:16])
    assert torch.equal(images, split.images[:16])
    shard = shard_for_eval(split, 0, 2)
    assert shard.masks is None and shard.detections is None
    with pytest.raises(ValueError, match="kind"):
        tasks_for_kind("mnist")


def test_scene_spec_validation() -> None:
    assert len(SCENE_CLASSES) == 10
    DataSpec(kind="synthetic_scenes", image_size=16, num_classes=2)
    with pytest.raises(ValueError, match=r"synthetic_scenes supports 2\.\.10 classes, got 11"):
        DataSpec(kind="synthetic_scenes", num_classes=11)
    with pytest.raises(ValueError, match="classes"):
        DataSpec(kind="synthetic_scenes", num_classes=1)
    for size in (12, 18, 30):
        with pytest.raises(ValueError, match="multiple of 4"):
            DataSpec(kind="synthetic_scenes", image_size=size, num_classes=10)
