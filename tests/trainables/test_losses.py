"""Task losses: CE, focal and smoothing variants, CenterNet targets and loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trainables.losses import (
    centernet_targets,
    classification_loss,
    detection_loss,
    gaussian_radius,
    segmentation_loss,
    task_loss,
)


def _logits_and_labels(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    logits = 2 * torch.randn(shape, generator=generator)
    labels_shape = (shape[0], *shape[2:])
    labels = torch.randint(shape[1], labels_shape, generator=generator)
    return logits, labels


LOSSES = {"cls": (classification_loss, (16, 5)), "seg": (segmentation_loss, (4, 5, 6, 6))}


@pytest.mark.parametrize("task", LOSSES)
def test_zero_gamma_is_plain_cross_entropy(task: str):
    loss_fn, shape = LOSSES[task]
    logits, labels = _logits_and_labels(shape)
    plain = F.cross_entropy(logits, labels)
    assert torch.allclose(loss_fn(logits, labels), plain, rtol=1e-6, atol=0)
    assert torch.allclose(loss_fn(logits, labels, focal_gamma=0.0), plain, rtol=1e-6, atol=0)


@pytest.mark.parametrize("task", LOSSES)
def test_label_smoothing_matches_torch(task: str):
    loss_fn, shape = LOSSES[task]
    logits, labels = _logits_and_labels(shape)
    smoothed = loss_fn(logits, labels, label_smoothing=0.1)
    assert torch.allclose(smoothed, F.cross_entropy(logits, labels, label_smoothing=0.1))
    assert not torch.allclose(smoothed, F.cross_entropy(logits, labels))


@pytest.mark.parametrize("task", LOSSES)
def test_focal_is_smaller_than_cross_entropy_and_weights_each_element(task: str):
    loss_fn, shape = LOSSES[task]
    logits, labels = _logits_and_labels(shape)
    focal = loss_fn(logits, labels, focal_gamma=2.0)
    assert 0 < focal < F.cross_entropy(logits, labels)
    ce = F.cross_entropy(logits, labels, reduction="none", label_smoothing=0.1)
    p_true = logits.softmax(1).gather(1, labels.unsqueeze(1)).squeeze(1)
    expected = ((1 - p_true) ** 2 * ce).mean()
    assert torch.allclose(loss_fn(logits, labels, focal_gamma=2.0, label_smoothing=0.1), expected)


def test_bad_smoothing_or_gamma_is_rejected():
    logits, labels = _logits_and_labels((4, 3))
    with pytest.raises(ValueError, match="label_smoothing"):
        classification_loss(logits, labels, label_smoothing=1.0)
    with pytest.raises(ValueError, match="focal_gamma"):
        classification_loss(logits, labels, focal_gamma=-1.0)


def test_gaussian_radius_matches_centernet_reference():
    # CenterNet's gaussian_radius((4, 4), 0.7): min(7.63, 14.70, 1.0894) by hand.
    radius = gaussian_radius(torch.tensor(4.0), torch.tensor(4.0))
    assert radius.item() == pytest.approx((-11.2 + math.sqrt(11.2**2 + 4 * 2.8 * 4.8)) / 2)


def test_centernet_targets_encode_centre_size_and_offset():
    det = torch.tensor([[[4, 6, 20, 22, 1], [0, 0, 6, 2, 0], [-1, -1, -1, -1, -1]]]).float()
    targets = centernet_targets(det, num_classes=2, output_size=(8, 8), stride=4)
    assert targets.heatmap.shape == (1, 2, 8, 8)
    assert targets.mask.tolist() == [[True, True, False]]
    # box 1: centre (12, 14) px = (3, 3.5) cells, 4 x 4 cells, radius 1
    assert targets.index[0, 0] == 3 * 8 + 3
    assert targets.size[0, 0].tolist() == [4.0, 4.0]
    assert targets.offset[0, 0].tolist() == [0.0, 0.5]
    assert targets.heatmap[0, 1, 3, 3] == 1
    sigma = 3 / 6
    assert targets.heatmap[0, 1, 3, 4].item() == pytest.approx(math.exp(-1 / (2 * sigma**2)))
    assert targets.heatmap[0, 1, 3, 5] == 0  # outside the radius
    # box 2: centre (3, 1) px = (0.75, 0.25) cells, class 0
    assert targets.index[0, 1] == 0
    assert targets.offset[0, 1].tolist() == [0.75, 0.25]
    assert targets.heatmap[0, 0].eq(1).sum() == 1
    assert targets.size[0, 2].abs().sum() == 0 and targets.offset[0, 2].abs().sum() == 0


def perfect_detection_output(det: torch.Tensor, num_classes: int, size: int) -> torch.Tensor:
    """The head output that encodes ``det`` exactly: sure centres, exact sizes and offsets."""
    targets = centernet_targets(det, num_classes, (size, size))
    heat = torch.where(targets.heatmap.eq(1), 20.0, -20.0)
    regression = torch.zeros(len(det), 4, size * size)
    values = torch.cat([targets.size, targets.offset], -1).transpose(1, 2)
    regression.scatter_(2, targets.index.unsqueeze(1).expand(-1, 4, -1), values)
    return torch.cat([heat, regression.view(len(det), 4, size, size)], 1)


def test_detection_loss_is_near_zero_for_a_perfect_output_and_larger_otherwise():
    det = torch.tensor([[[4, 6, 20, 22, 1], [0, 0, 6, 2, 0]], [[8, 8, 16, 16, 0], [-1] * 5]])
    det = det.float()
    perfect = perfect_detection_output(det, 2, 8)
    assert detection_loss(perfect, det, num_classes=2) < 1e-3
    worse = perfect.clone()
    worse[:, 2:4] += 1.0  # every size one cell too large: 0.1 * 1
    assert detection_loss(worse, det, num_classes=2).item() == pytest.approx(0.1, abs=1e-3)


@pytest.mark.parametrize("det", [torch.full((2, 3, 5), -1.0), torch.zeros(2, 0, 5)])
def test_detection_loss_without_objects_is_finite(det: torch.Tensor):
    output = torch.randn(2, 2 + 4, 8, 8, requires_grad=True)
    loss = detection_loss(output, det, num_classes=2)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert torch.isfinite(output.grad).all()
    assert output.grad[:, 2:].abs().sum() == 0  # no boxes, no size or offset signal


def test_task_loss_dispatches_and_rejects_unknown_tasks():
    logits, labels = _logits_and_labels((8, 4))
    smoothed = task_loss("cls", logits, labels, num_classes=4, label_smoothing=0.2)
    assert torch.equal(smoothed, classification_loss(logits, labels, label_smoothing=0.2))
    masks_logits, masks = _logits_and_labels((2, 4, 5, 5))
    focal = task_loss("seg", masks_logits, masks, num_classes=3, focal_gamma=1.0)
    assert torch.equal(focal, segmentation_loss(masks_logits, masks, focal_gamma=1.0))
    det = torch.tensor([[[0, 0, 8, 8, 2]]]).float()
    output = torch.randn(1, 3 + 4, 4, 4)
    assert torch.equal(task_loss("det", output, det, num_classes=3), detection_loss(output, det, 3))
    with pytest.raises(ValueError, match="unknown task"):
        task_loss("depth", logits, labels, num_classes=4)
