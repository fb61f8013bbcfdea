"""Batch augmentation on its own: settings, identity, determinism, shapes and box geometry.

The flip and crop of masks and boxes together with their images are in test_real_data.py;
these tests hold the pieces that one does not.
"""

from __future__ import annotations

import pytest
import torch

from trainables.augment import Augmentation, _move_boxes, augment_batch


def _batch(count: int = 4, size: int = 8) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(count, 3, size, size, generator=generator)
    masks = torch.zeros(count, size, size, dtype=torch.int64)
    masks[:, 2:6, 2:6] = 2
    masks[:, 0:2, 6:8] = 1
    boxes = torch.tensor([[[2.0, 2.0, 6.0, 6.0, 1.0], [-1.0, -1.0, -1.0, -1.0, -1.0]]])
    targets = {
        "cls": torch.arange(count),
        "seg": masks,
        "det": boxes.repeat(count, 1, 1),
    }
    return images, targets


def _copies(images, targets):
    return images.clone(), {k: v.clone() for k, v in targets.items()}


@pytest.mark.parametrize("crop_scale", [0.0, -0.5, 1.5])
def test_a_crop_scale_outside_zero_to_one_is_refused_by_name(crop_scale):
    with pytest.raises(ValueError, match=rf"crop_scale must be in \(0, 1\], got {crop_scale}"):
        Augmentation(crop_scale=crop_scale)


def test_active_only_when_a_transform_is_on():
    assert not Augmentation().active
    assert not Augmentation(hflip=False, crop_scale=1.0).active
    assert Augmentation(hflip=True).active
    assert Augmentation(crop_scale=0.99).active


def test_no_transform_hands_the_batch_back_unchanged():
    images, targets = _batch()
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    out, moved = augment_batch(images, targets, Augmentation(), generator)
    assert torch.equal(out, images) and moved.keys() == targets.keys()
    assert all(torch.equal(moved[k], targets[k]) for k in targets)
    # Nothing was drawn: the stream a resumed run continues is where it was.
    assert torch.equal(generator.get_state(), state)


@pytest.mark.parametrize(
    "augmentation",
    [Augmentation(hflip=True), Augmentation(crop_scale=0.4), Augmentation(True, 0.6)],
    ids=["flip", "crop", "flip+crop"],
)
def test_transforms_keep_shapes_dtypes_labels_and_leave_inputs_untouched(augmentation):
    images, targets = _batch()
    before_images, before_targets = _copies(images, targets)
    out, moved = augment_batch(images, targets, augmentation, torch.Generator().manual_seed(1))
    assert torch.equal(images, before_images)
    assert all(torch.equal(targets[k], before_targets[k]) for k in targets)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert set(moved) == {"cls", "seg", "det"}
    assert torch.equal(moved["cls"], targets["cls"])
    assert moved["seg"].shape == targets["seg"].shape and moved["seg"].dtype == torch.int64
    # Masks are resampled by nearest neighbour: no class appears that was not there.
    assert set(moved["seg"].unique().tolist()) <= {0, 1, 2}
    assert moved["det"].shape == targets["det"].shape and moved["det"].dtype == torch.float32
    assert (moved["det"][:, 1] == -1).all()  # padding stays padding
    kept = moved["det"][:, 0]
    kept = kept[kept[:, 4] >= 0]
    assert (kept[:, 4] == 1).all()  # a box keeps its class
    assert ((kept[:, :4] >= 0) & (kept[:, :4] <= 8)).all()
    assert (kept[:, 2] > kept[:, 0]).all() and (kept[:, 3] > kept[:, 1]).all()


def test_a_crop_changes_the_images_and_keeps_pixel_values_in_range():
    images, targets = _batch()
    out, _ = augment_batch(
        images, targets, Augmentation(crop_scale=0.3), torch.Generator().manual_seed(0)
    )
    assert not torch.equal(out, images)
    # Bilinear with border padding: no value outside the input's range.
    assert out.min() >= images.min() and out.max() <= images.max()


def test_same_seed_same_batch_and_the_generator_moves_on():
    images, targets = _batch(count=8)
    augmentation = Augmentation(hflip=True, crop_scale=0.5)
    generator = torch.Generator().manual_seed(7)
    first = augment_batch(images, targets, augmentation, generator)
    again = augment_batch(images, targets, augmentation, torch.Generator().manual_seed(7))
    assert torch.equal(first[0], again[0])
    assert all(torch.equal(first[1][k], again[1][k]) for k in targets)
    # The next batch of the same stream is drawn afresh, not a repeat of the first.
    second = augment_batch(images, targets, augmentation, generator)
    assert not torch.equal(first[0], second[0])


def test_without_a_generator_the_global_seed_decides():
    images, targets = _batch(count=8)
    augmentation = Augmentation(hflip=True, crop_scale=0.5)
    torch.manual_seed(11)
    first, _ = augment_batch(images, targets, augmentation, None)
    torch.manual_seed(11)
    again, _ = augment_batch(images, targets, augmentation, None)
    assert torch.equal(first, again)


def test_a_flip_only_mirrors_some_samples_exactly():
    images, targets = _batch(count=16)
    out, moved = augment_batch(
        images, targets, Augmentation(hflip=True), torch.Generator().manual_seed(0)
    )
    flipped = [not torch.equal(out[i], images[i]) for i in range(16)]
    assert 0 < sum(flipped) < 16  # each sample its own coin
    for i, was_flipped in enumerate(flipped):
        expected = images[i].flip(-1) if was_flipped else images[i]
        assert torch.equal(out[i], expected)
        expected_mask = targets["seg"][i].flip(-1) if was_flipped else targets["seg"][i]
        assert torch.equal(moved["seg"][i], expected_mask)


def test_float64_batches_stay_float64():
    images, targets = _batch()
    out, _ = augment_batch(
        images.double(), targets, Augmentation(True, 0.5), torch.Generator().manual_seed(0)
    )
    assert out.dtype == torch.float64


# -- box geometry --------------------------------------------------------------------


def _map(scale: float, centre: float, count: int = 1):
    return torch.full((count,), scale), torch.full((count,), centre)


def test_boxes_follow_a_zoom_into_the_centre_and_vanish_outside_it():
    # Output covers the middle half of the input (scale 0.5, centre 0) on an 8x8 image.
    boxes = torch.tensor(
        [
            [
                [2.0, 2.0, 6.0, 6.0, 3.0],  # the middle half: the whole output
                [3.0, 3.0, 5.0, 5.0, 1.0],  # the middle quarter: the middle half
                [0.0, 0.0, 2.0, 2.0, 2.0],  # the corner: cropped away
                [0.0, 3.0, 4.0, 5.0, 0.0],  # half outside: clipped at the edge
            ]
        ]
    )
    moved = _move_boxes(boxes, _map(0.5, 0.0), _map(0.5, 0.0), 8, 8)
    assert moved[0].tolist() == [
        [0.0, 0.0, 8.0, 8.0, 3.0],
        [2.0, 2.0, 6.0, 6.0, 1.0],
        [-1.0, -1.0, -1.0, -1.0, -1.0],
        [0.0, 2.0, 4.0, 6.0, 0.0],
    ]


def test_a_mirror_map_swaps_box_edges_and_a_non_square_image_uses_each_side():
    boxes = torch.tensor([[[1.0, 2.0, 3.0, 5.0, 4.0]]])
    # Mirrored in x on a 10 wide, 6 high image; y as it is.
    moved = _move_boxes(boxes, _map(-1.0, 0.0), _map(1.0, 0.0), 10, 6)
    assert moved[0, 0].tolist() == [7.0, 2.0, 9.0, 5.0, 4.0]


def test_padding_rows_stay_padding_whatever_the_map():
    boxes = torch.full((2, 3, 5), -1.0)
    moved = _move_boxes(boxes, _map(-0.5, 0.2, 2), _map(0.7, -0.1, 2), 8, 8)
    assert torch.equal(moved, boxes)
