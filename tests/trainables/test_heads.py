"""Dense task heads: shapes, initialisation, decoding, and that each one learns."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainables.heads import HEATMAP_PRIOR, DetectionHead, SegmentationHead, decode_detections
from trainables.losses import task_loss
from trainables.models import SmallCNN

NUM_CLASSES = 3


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions run fastest on one thread and do not stall on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def scene_batch(
    num_images: int, size: int, seed: int = 0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Noisy images with two coloured rectangles each, and their cls/seg/det targets.

    Each rectangle lies in its own half of the image, so no two share a stride-4 centre
    cell (a CenterNet head regresses one box per cell).
    """
    generator = torch.Generator().manual_seed(seed)
    colours = torch.eye(3)
    images = 0.1 * torch.randn(num_images, 3, size, size, generator=generator)
    masks = torch.zeros(num_images, size, size, dtype=torch.long)
    boxes = torch.full((num_images, 3, 5), -1.0)
    labels = torch.zeros(num_images, dtype=torch.long)
    for i in range(num_images):
        for k in range(2):
            label = int(torch.randint(NUM_CLASSES, (1,), generator=generator))
            w, h = (int(v) for v in torch.randint(size // 4, size // 2, (2,), generator=generator))
            x = k * size // 2 + int(torch.randint(0, size // 2 - w + 1, (1,), generator=generator))
            y = int(torch.randint(0, size - h + 1, (1,), generator=generator))
            images[i, :, y : y + h, x : x + w] += colours[label].view(3, 1, 1)
            masks[i, y : y + h, x : x + w] = label + 1
            boxes[i, k] = torch.tensor([x, y, x + w, y + h, label], dtype=torch.float)
            if k == 0:
                labels[i] = label
    return images, {"cls": labels, "seg": masks, "det": boxes}


class _PooledClassifier(nn.Module):
    """A linear classifier on the pooled deepest map, independent of the model's heads."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, NUM_CLASSES)

    def forward(self, pyramid: list[torch.Tensor]) -> torch.Tensor:
        return self.linear(pyramid[-1].mean(dim=(2, 3)))


def _head(task: str, backbone: SmallCNN) -> nn.Module:
    channels, strides = backbone.group_channels, backbone.group_strides
    if task == "cls":
        return _PooledClassifier(backbone.out_features)
    if task == "seg":
        return SegmentationHead(channels, strides, NUM_CLASSES)
    return DetectionHead(channels, strides, NUM_CLASSES)


@pytest.mark.parametrize("size", [16, 32])
@pytest.mark.parametrize("width", [4, 16])
def test_output_shapes(size: int, width: int):
    backbone = SmallCNN(width=width)
    pyramid = backbone.forward_pyramid(torch.randn(2, 3, size, size))
    channels, strides = backbone.group_channels, backbone.group_strides
    segmentation = SegmentationHead(channels, strides, NUM_CLASSES, dropout=0.3)(pyramid)
    assert segmentation.shape == (2, NUM_CLASSES + 1, size, size)
    detection = DetectionHead(channels, strides, NUM_CLASSES)(pyramid)
    assert detection.shape == (2, NUM_CLASSES + 4, size // 4, size // 4)


def test_heads_work_on_shallower_and_coarser_pyramids():
    backbone = SmallCNN(width=4, num_groups=4)  # strides 1, 1, 2, 2: no stride-4 level
    pyramid = backbone.forward_pyramid(torch.randn(2, 3, 16, 16))
    channels, strides = backbone.group_channels, backbone.group_strides
    assert DetectionHead(channels, strides, 2)(pyramid).shape == (2, 6, 4, 4)
    assert DetectionHead(channels, strides, 2, stride=2)(pyramid).shape == (2, 6, 8, 8)
    assert SegmentationHead(channels, strides, 2)(pyramid).shape == (2, 3, 16, 16)


def test_heatmap_bias_starts_at_the_centernet_prior():
    head = DetectionHead([4, 8], [1, 4], NUM_CLASSES)
    bias = head.heatmap[-1].bias
    assert torch.allclose(bias, torch.full_like(bias, -2.19), atol=0.01)
    assert torch.allclose(bias.sigmoid(), torch.full_like(bias, HEATMAP_PRIOR))


@pytest.mark.parametrize("task", ["cls", "seg", "det"])
def test_each_head_learns_a_fixed_batch(task: str):
    torch.manual_seed(0)
    images, targets = scene_batch(8, 32)
    backbone = SmallCNN(width=4)
    head = _head(task, backbone)
    parameters = [*backbone.parameters(), *head.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=1e-2)
    losses = []
    for _ in range(40):
        loss = task_loss(
            task, head(backbone.forward_pyramid(images)), targets[task], num_classes=NUM_CLASSES
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(value) for value in losses)
    assert sum(losses[-5:]) / 5 < 0.5 * losses[0], losses


def test_decode_reads_peak_size_and_offset():
    output = torch.full((1, 2 + 4, 4, 4), -10.0)
    output[0, 1, 2, 1] = 3.0  # class 1 centre at cell (x=1, y=2)
    output[0, 1, 2, 2] = 2.0  # a lower neighbour: suppressed by the 3x3 peak test
    output[0, 2:4, 2, 1] = torch.tensor([2.0, 1.0])  # 2 x 1 cells
    output[0, 4:6, 2, 1] = torch.tensor([0.5, 0.25])
    (decoded,) = decode_detections(output, num_classes=2, stride=4, max_detections=5)
    assert decoded["boxes"].shape == (5, 4) and decoded["scores"].shape == (5,)
    assert decoded["labels"][0] == 1
    assert decoded["scores"][0] == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())
    # centre (1.5, 2.25) cells = (6, 9) px; size 8 x 4 px
    assert torch.allclose(decoded["boxes"][0], torch.tensor([2.0, 7.0, 10.0, 11.0]))
    assert decoded["scores"][1] < 1e-4  # the neighbour at 2.0 did not survive


def test_decode_caps_detections_at_the_number_of_cells():
    (decoded,) = decode_detections(torch.zeros(1, 1 + 4, 2, 2), num_classes=1, max_detections=20)
    assert len(decoded["scores"]) == 4
