"""Tests for the synthetic data sets, their disk cache and the batch iterators."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from trainables.data import (
    DataSpec,
    ImageDataset,
    Normalization,
    Samples,
    Split,
    iterate_batches,
    load_dataset,
    shard_for_eval,
)
from trainables.data._store import open_store

TINY = DataSpec(num_samples=360, image_size=16, num_classes=36, seed=0)
TINY_SOURCE = DataSpec(kind="synthetic_source", num_samples=360, image_size=16, num_classes=20)


def numbered_split(size: int) -> Split:
    """A split whose label is the sample's index, so batches reveal which samples they hold."""
    samples = Samples(
        pixels=torch.zeros(size, 3, 2, 2, dtype=torch.uint8), labels=torch.arange(size)
    )
    return Split(samples, torch.arange(size), Normalization((1.0,) * 3, (0.0,) * 3))


def all_images(dataset: ImageDataset) -> torch.Tensor:
    return torch.cat([dataset.train.images, dataset.val.images])


@pytest.mark.usefixtures("fresh_cache")
def test_same_spec_gives_identical_tensors_even_after_clearing_caches(tmp_path: Path) -> None:
    first = load_dataset(TINY)
    load_dataset.cache_clear()
    for cached in (tmp_path / "data").iterdir():
        cached.unlink()
    second = load_dataset(TINY)

    assert first is not second
    assert torch.equal(first.train.images, second.train.images)
    assert torch.equal(first.train.labels, second.train.labels)
    assert torch.equal(first.val.images, second.val.images)
    assert torch.equal(first.val.labels, second.val.labels)


@pytest.mark.usefixtures("fresh_cache")
def test_different_seed_or_kind_gives_different_images() -> None:
    base = all_images(load_dataset(TINY))
    other_seed = all_images(load_dataset(dataclasses.replace(TINY, seed=1)))
    other_kind = all_images(load_dataset(TINY_SOURCE))

    assert base.shape == other_seed.shape == other_kind.shape
    assert not torch.equal(base, other_seed)
    assert not torch.equal(base, other_kind)


@pytest.mark.usefixtures("fresh_cache")
@pytest.mark.parametrize("spec", [TINY, TINY_SOURCE], ids=["signs", "source"])
def test_shapes_dtypes_labels_and_normalisation(spec: DataSpec) -> None:
    dataset = load_dataset(spec)
    size = spec.image_size

    assert dataset.num_classes == spec.num_classes
    for split in (dataset.train, dataset.val):
        assert split.images.dtype == torch.float32
        assert split.labels.dtype == torch.int64
        assert split.images.shape == (len(split), 3, size, size)
        assert split.labels.shape == (len(split),)
        assert torch.isfinite(split.images).all()
        assert int(split.labels.min()) >= 0
        assert int(split.labels.max()) < spec.num_classes
    # Balanced classes: 360 samples over the classes, every class in both splits.
    labels = torch.cat([dataset.train.labels, dataset.val.labels])
    counts = torch.bincount(labels, minlength=spec.num_classes)
    assert int(counts.min()) == int(counts.max()) == spec.num_samples // spec.num_classes
    assert set(dataset.val.labels.tolist()) == set(range(spec.num_classes))
    assert set(dataset.train.labels.tolist()) == set(range(spec.num_classes))

    per_channel = dataset.train.images.transpose(0, 1).flatten(1)
    assert per_channel.mean(dim=1).abs().max() < 1e-3
    assert (per_channel.std(dim=1) - 1.0).abs().max() < 1e-2


@pytest.mark.usefixtures("fresh_cache")
def test_split_sizes_and_no_image_in_both_splits() -> None:
    dataset = load_dataset(TINY)

    assert len(dataset.val) == round(TINY.num_samples * TINY.val_fraction)
    assert len(dataset.train) + len(dataset.val) == TINY.num_samples
    train_rows = {row.numpy().tobytes() for row in dataset.train.images.flatten(1)}
    val_rows = {row.numpy().tobytes() for row in dataset.val.images.flatten(1)}
    # Noise makes every image unique, so a shared row would mean a leaked sample.
    assert len(train_rows) == len(dataset.train)
    assert len(val_rows) == len(dataset.val)
    assert train_rows.isdisjoint(val_rows)


@pytest.mark.usefixtures("fresh_cache")
def test_classes_differ_in_shape_not_in_mean_colour() -> None:
    dataset = load_dataset(DataSpec(num_samples=720, image_size=16, num_classes=6))
    images, labels = dataset.train.images, dataset.train.labels
    class_means = torch.stack([images[labels == c].mean(dim=(0, 2, 3)) for c in range(6)])
    spread_across_classes = class_means.std(dim=0)
    spread_across_images = images.mean(dim=(2, 3)).std(dim=0)
    assert (spread_across_classes < 0.25 * spread_across_images).all()


def test_disk_cache_round_trip(fresh_cache: Path) -> None:
    generated = load_dataset(TINY)
    files = list((fresh_cache / "data").iterdir())
    assert len(files) == 1
    name = files[0].name
    assert name.startswith("synthetic_signs-") and name.endswith(".store")

    load_dataset.cache_clear()
    stamp = files[0].stat().st_mtime_ns
    reloaded = load_dataset(TINY)

    assert files[0].stat().st_mtime_ns == stamp  # read back, not rewritten
    assert torch.equal(generated.train.images, reloaded.train.images)
    assert torch.equal(generated.val.labels, reloaded.val.labels)
    assert load_dataset(TINY) is reloaded  # served from memory the second time


def test_unreadable_cache_file_is_regenerated(fresh_cache: Path) -> None:
    # Copied out first: the store is overwritten in place below, under its own mapping.
    expected = load_dataset(TINY).train.images
    (cached,) = (fresh_cache / "data").iterdir()
    load_dataset.cache_clear()
    cached.write_bytes(b"not a store file")

    regenerated = load_dataset(TINY)

    assert torch.equal(expected, regenerated.train.images)
    assert open_store(cached)["pixels"].dtype == torch.uint8
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]  # no temp files left


def test_cache_key_depends_on_every_field(fresh_cache: Path) -> None:
    small = DataSpec(num_samples=40, image_size=8, num_classes=4, val_fraction=0.25)
    variants = [
        small,
        *(
            dataclasses.replace(small, **change)
            for change in (
                {"seed": 3},
                {"num_samples": 44},
                {"image_size": 9},
                {"num_classes": 5},
                {"val_fraction": 0.5},
                {"kind": "synthetic_source"},
            )
        ),
    ]
    for spec in variants:
        load_dataset(spec)
    assert len(os.listdir(fresh_cache / "data")) == len(variants)


def test_spec_dict_round_trip_and_validation() -> None:
    spec = DataSpec(kind="synthetic_source", num_samples=500, num_classes=20, seed=7)
    assert DataSpec.from_dict(spec.to_dict()) == spec
    assert hash(DataSpec.from_dict(spec.to_dict())) == hash(spec)
    with pytest.raises(TypeError):
        DataSpec.from_dict({**spec.to_dict(), "colour": "red"})
    with pytest.raises(ValueError, match="kind"):
        DataSpec(kind="mnist")
    with pytest.raises(ValueError, match="classes"):
        DataSpec(num_classes=500)
    with pytest.raises(ValueError, match="val_fraction"):
        DataSpec(val_fraction=1.0)
    with pytest.raises(ValueError, match="empty"):
        DataSpec(num_samples=2, val_fraction=0.1)


def test_iterate_batches_covers_every_sample_once_per_epoch() -> None:
    split = numbered_split(103)
    generator = torch.Generator().manual_seed(0)

    epochs = []
    for _ in range(2):
        batches = list(iterate_batches(split, 16, shuffle=True, generator=generator))
        assert [len(labels) for _, labels in batches] == [16] * 6 + [7]
        assert all(images.shape[1:] == (3, 2, 2) for images, _ in batches)
        order = torch.cat([labels for _, labels in batches])
        assert sorted(order.tolist()) == list(range(103))
        epochs.append(order)
    assert not torch.equal(epochs[0], epochs[1])  # a new permutation each epoch

    in_order = torch.cat(
        [labels for _, labels in iterate_batches(split, 16, shuffle=False, generator=None)]
    )
    assert in_order.tolist() == list(range(103))
    dropped = list(iterate_batches(split, 16, shuffle=False, generator=None, drop_last=True))
    assert [len(labels) for _, labels in dropped] == [16] * 6


def test_iterate_batches_two_ranks_get_equal_steps_and_disjoint_shards() -> None:
    split = numbered_split(103)
    shards = []
    for rank in range(2):
        generator = torch.Generator().manual_seed(5)  # same state on every rank
        batches = list(
            iterate_batches(split, 8, shuffle=True, generator=generator, rank=rank, world_size=2)
        )
        shards.append(batches)

    assert len(shards[0]) == len(shards[1])
    assert [len(b[1]) for b in shards[0]] == [len(b[1]) for b in shards[1]]
    seen = [set(torch.cat([labels for _, labels in batches]).tolist()) for batches in shards]
    assert seen[0].isdisjoint(seen[1])
    assert len(seen[0]) == len(seen[1]) == 51  # 103 truncated to 102, half each
    with pytest.raises(ValueError, match="generator"):
        next(iterate_batches(split, 8, shuffle=True, generator=None, rank=0, world_size=2))
    with pytest.raises(ValueError, match="rank"):
        next(iterate_batches(split, 8, shuffle=False, generator=None, rank=2, world_size=2))


@pytest.mark.parametrize("world_size", [1, 2, 3, 7])
def test_shard_for_eval_covers_every_sample_exactly_once(world_size: int) -> None:
    split = numbered_split(20)
    shards = [shard_for_eval(split, rank, world_size) for rank in range(world_size)]

    labels = torch.cat([shard.labels for shard in shards]).tolist()
    assert sorted(labels) == list(range(20))
    assert sum(len(shard) for shard in shards) == 20
    assert all(shard.images.shape[0] == len(shard) for shard in shards)


def test_spec_checks_class_counts_against_the_renderers_templates():
    from trainables.data._signs import num_class_templates
    from trainables.data_spec import CLASS_TEMPLATES
    from trainables.scenes import SCENE_CLASSES

    assert {
        "synthetic_signs": num_class_templates("synthetic_signs"),
        "synthetic_source": num_class_templates("synthetic_source"),
        "synthetic_scenes": len(SCENE_CLASSES),
    } == CLASS_TEMPLATES


@pytest.mark.slow
def test_plan_definitions_import_no_torch():
    """Results are read (analysis.export, the plans) without the engine's dependencies."""
    import subprocess
    import sys

    code = "import sys, analysis.export, trainables.phases; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
