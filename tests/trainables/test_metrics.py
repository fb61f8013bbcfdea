"""Validation metrics on constructed cases, decoding round trips and DDP syncing."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from tests.trainables.test_heads import scene_batch
from tests.trainables.test_losses import perfect_detection_output
from trainables.heads import decode_detections
from trainables.metrics import DetectionMeanAP, TaskMetrics

NUM_CLASSES = 3
TASKS = ("cls", "seg", "det")
ALL_METRICS = {"val/cls_acc", "val/seg_miou", "val/det_map50", "val/det_map"}


def _one_hot_logits(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Logits whose argmax is ``labels``, classes on dim 1."""
    return F.one_hot(labels, num_classes).movedim(-1, 1).float() * 5.0


def _detections(*rows: list[float]) -> dict[str, torch.Tensor]:
    """One image's predictions from ``[x1, y1, x2, y2, score, label]`` rows."""
    table = torch.tensor(rows, dtype=torch.float).view(-1, 6)
    return {"boxes": table[:, :4], "scores": table[:, 4], "labels": table[:, 5].long()}


def _det_map(predictions: list[dict[str, torch.Tensor]], det: torch.Tensor) -> dict[str, float]:
    metric = DetectionMeanAP(NUM_CLASSES)
    metric.update(predictions, det)
    return {name: float(value) for name, value in metric.compute().items()}


def _box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    top_left = torch.maximum(a[:, :2], b[:, :2])
    bottom_right = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(1)
    area = (a[:, 2:] - a[:, :2]).prod(1) + (b[:, 2:] - b[:, :2]).prod(1)
    return inter / (area - inter)


def test_perfect_predictions_score_exactly_one():
    images, targets = scene_batch(6, 32, seed=3)
    # class 3 (object class 2) never occurs: absent classes must not pull mIoU down
    targets["seg"][targets["seg"] == 3] = 0
    outputs = {
        "cls": _one_hot_logits(targets["cls"], NUM_CLASSES),
        "seg": _one_hot_logits(targets["seg"], NUM_CLASSES + 1),
        "det": perfect_detection_output(targets["det"], NUM_CLASSES, 8),
    }
    metrics = TaskMetrics(TASKS, NUM_CLASSES)
    metrics.update(outputs, targets)
    assert metrics.compute() == dict.fromkeys(ALL_METRICS, 1.0)


def test_wrong_and_empty_predictions_score_zero():
    labels = torch.tensor([0, 1, 2, 0])
    masks = torch.tensor([[[0, 1], [2, 2]]])
    metrics = TaskMetrics(("cls", "seg"), NUM_CLASSES)
    metrics.update(
        {
            "cls": _one_hot_logits((labels + 1) % NUM_CLASSES, NUM_CLASSES),
            "seg": _one_hot_logits(torch.full_like(masks, 3), NUM_CLASSES + 1),
        },
        {"cls": labels, "seg": masks},
    )
    assert metrics.compute() == {"val/cls_acc": 0.0, "val/seg_miou": 0.0}

    det = torch.tensor([[[0, 0, 10, 10, 1], [-1, -1, -1, -1, -1]]]).float()
    assert _det_map([_detections()], det) == {"map50": 0.0, "map": 0.0}
    assert _det_map([_detections([0, 0, 10, 10, 0.9, 2])], det) == {"map50": 0.0, "map": 0.0}
    no_truth = torch.full((1, 2, 5), -1.0)
    assert _det_map([_detections([0, 0, 10, 10, 0.9, 2])], no_truth) == {"map50": 0.0, "map": 0.0}


def test_partial_classification_and_segmentation_by_hand():
    metrics = TaskMetrics(("cls", "seg"), NUM_CLASSES)
    labels = torch.tensor([0, 1, 2, 1])
    predicted = torch.tensor([0, 1, 0, 0])  # 2 of 4 right
    # background: IoU 1/2; class 1: IoU 2/3; classes 2, 3 absent from both
    masks = torch.tensor([[[0, 1], [1, 1]]])
    predicted_masks = torch.tensor([[[0, 0], [1, 1]]])
    metrics.update(
        {
            "cls": _one_hot_logits(predicted, NUM_CLASSES),
            "seg": _one_hot_logits(predicted_masks, NUM_CLASSES + 1),
        },
        {"cls": labels, "seg": masks},
    )
    result = metrics.compute()
    assert result["val/cls_acc"] == 0.5
    assert result["val/seg_miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_partial_detection_by_hand():
    det = torch.tensor([[[0, 0, 10, 10, 0], [20, 20, 30, 30, 0]]]).float()
    # one of two objects found, exactly: recall 0.5 at precision 1 -> 51 of 101 recall points
    found_one = _det_map([_detections([0, 0, 10, 10, 0.9, 0])], det)
    assert found_one["map50"] == pytest.approx(51 / 101)
    assert found_one["map"] == pytest.approx(51 / 101)
    # IoU 0.62 matches at thresholds 0.50, 0.55, 0.60 only: AP 1 at 3 of the 10 thresholds
    loose = _det_map([_detections([0, 0, 10, 6.2, 0.9, 0])], det[:, :1])
    assert loose == {"map50": 1.0, "map": pytest.approx(0.3)}


def test_decoding_perfect_outputs_round_trips_the_boxes():
    _, targets = scene_batch(5, 32, seed=4)
    det = targets["det"]
    output = perfect_detection_output(det, NUM_CLASSES, 8)
    decoded = decode_detections(output, NUM_CLASSES, max_detections=20)
    for truth, found in zip(det, decoded, strict=True):
        truth = truth[truth[:, 4] >= 0]
        confident = found["scores"] > 0.5
        assert confident.sum() == len(truth)
        boxes, labels = found["boxes"][confident], found["labels"][confident]
        for box, label in zip(truth[:, :4], truth[:, 4].long(), strict=True):
            iou = _box_iou(boxes, box.expand_as(boxes))
            assert iou.max() == pytest.approx(1.0, abs=1e-5)
            assert labels[iou.argmax()] == label
    assert _det_map(decoded, det) == {"map50": 1.0, "map": 1.0}


def test_compute_reports_updated_tasks_and_reset_forgets():
    metrics = TaskMetrics(TASKS, NUM_CLASSES)
    labels = torch.tensor([0, 1])
    metrics.update({"cls": _one_hot_logits(labels, NUM_CLASSES)}, {"cls": labels})
    assert metrics.compute() == {"val/cls_acc": 1.0}
    metrics.reset()
    assert metrics.compute() == {}
    with pytest.raises(ValueError, match="not tracked"):
        TaskMetrics(("cls",), NUM_CLASSES).update({"seg": torch.zeros(1, 4, 2, 2)}, {})
    with pytest.raises(ValueError, match="unknown task"):
        TaskMetrics(("depth",), NUM_CLASSES)


def _noisy_batch() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Twelve 16-pixel scenes with imperfect predictions for every task."""
    _, targets = scene_batch(12, 16, seed=5)
    generator = torch.Generator().manual_seed(6)

    def noise(like: torch.Tensor, scale: float) -> torch.Tensor:
        return scale * torch.randn(like.shape, generator=generator)

    det = perfect_detection_output(targets["det"], NUM_CLASSES, 4).clamp(-3, 3)
    det[:, :NUM_CLASSES] += noise(det[:, :NUM_CLASSES], 2.0)
    det[:, NUM_CLASSES:] += noise(det[:, NUM_CLASSES:], 0.3)
    cls = _one_hot_logits(targets["cls"], NUM_CLASSES)
    seg = _one_hot_logits(targets["seg"], NUM_CLASSES + 1)
    outputs = {"cls": cls + noise(cls, 5.0), "seg": seg + noise(seg, 4.0), "det": det}
    return outputs, targets


#: Per rank, the batches of two validation passes: uneven shards (rank 1 in two
#: batches), then everything on rank 0 and nothing on rank 1.
_SHARDS = {
    0: ([slice(0, 5)], [slice(0, 12)]),
    1: ([slice(5, 9), slice(9, 12)], []),
}


def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        outputs, targets = _noisy_batch()
        metrics = TaskMetrics(TASKS, NUM_CLASSES)
        results = []
        for batches in _SHARDS[rank]:
            metrics.reset()
            for shard in batches:
                metrics.update(
                    {task: value[shard] for task, value in outputs.items()},
                    {task: value[shard] for task, value in targets.items()},
                )
            results.append(metrics.compute())
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_ddp_compute_equals_single_process_on_all_data(tmp_path: Path):
    outputs, targets = _noisy_batch()
    single = TaskMetrics(TASKS, NUM_CLASSES)
    single.update(outputs, targets)
    expected = single.compute()
    assert set(expected) == ALL_METRICS
    assert all(0.0 < value < 1.0 for value in expected.values()), expected

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        uneven, one_empty = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert uneven == pytest.approx(expected, abs=1e-6)
        assert one_empty == pytest.approx(expected, abs=1e-6)
