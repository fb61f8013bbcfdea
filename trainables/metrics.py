"""Validation metrics of the classification, segmentation and detection tasks.

All are torchmetrics metrics, so under DDP every rank updates with its own shard
and ``compute()`` syncs the states across processes first.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from trainables.heads import decode_detections
from trainables.metric_names import TASK_METRICS

__all__ = ["DetectionMeanAP", "TaskMetrics"]

#: Columns of one stored detection (x1, y1, x2, y2, score, label) and one stored
#: ground-truth box (x1, y1, x2, y2, label).
_DETECTION_FIELDS = 6
_TRUTH_FIELDS = 5


class DetectionMeanAP(Metric):
    """COCO box mAP@0.5 and mAP@[.5:.95] (maxDets 100, all areas) via pycocotools.

    States are flat 1-D float tensors concatenated across ranks: torchmetrics syncs an
    empty 1-D float tensor for a rank that saw no data, which only concatenates cleanly
    with 1-D float states. Per-image box counts, gathered in the same rank order as
    the boxes, give every image a global id after the sync.

    Both values are 0.0 when there are no detections or no ground-truth boxes, where
    COCO would report -1.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.add_state("detections", default=[], dist_reduce_fx="cat")
        self.add_state("detections_per_image", default=[], dist_reduce_fx="cat")
        self.add_state("truths", default=[], dist_reduce_fx="cat")
        self.add_state("truths_per_image", default=[], dist_reduce_fx="cat")

    def update(self, predictions: list[dict[str, torch.Tensor]], det: torch.Tensor) -> None:
        """Add a batch.

        Args:
            predictions: Per image ``boxes`` (D, 4) xyxy pixels, ``scores``, ``labels``.
            det: (N, K, 5) ground-truth rows ``[x1, y1, x2, y2, class]``, padding -1.
        """
        if len(predictions) != len(det):
            raise ValueError(f"{len(predictions)} predictions for {len(det)} images")
        for prediction, truth in zip(predictions, det, strict=True):
            rows = torch.cat(
                [
                    prediction["boxes"].float(),
                    prediction["scores"].float().unsqueeze(1),
                    prediction["labels"].float().unsqueeze(1),
                ],
                dim=1,
            )
            truth = truth[truth[:, 4] >= 0].float()
            self.detections.append(rows.flatten())
            self.detections_per_image.append(rows.new_tensor([len(rows)]))
            self.truths.append(truth.flatten())
            self.truths_per_image.append(truth.new_tensor([len(truth)]))

    def compute(self) -> dict[str, torch.Tensor]:
        """``{"map50": ..., "map": ...}`` as scalar float tensors."""
        detections = _joined(self.detections).view(-1, _DETECTION_FIELDS).double().numpy()
        truths = _joined(self.truths).view(-1, _TRUTH_FIELDS).double().numpy()
        if len(detections) == 0 or len(truths) == 0:
            return {"map50": self._scalar(0.0), "map": self._scalar(0.0)}
        truth_counts = _joined(self.truths_per_image).long()
        detection_counts = _joined(self.detections_per_image).long()
        image_ids = torch.arange(len(truth_counts))
        map50, map_all = _coco_box_map(
            detections,
            image_ids.repeat_interleave(detection_counts).numpy(),
            truths,
            image_ids.repeat_interleave(truth_counts).numpy(),
            len(truth_counts),
            self.num_classes,
        )
        return {"map50": self._scalar(map50), "map": self._scalar(map_all)}

    def _scalar(self, value: float) -> torch.Tensor:
        return torch.tensor(value, dtype=torch.float32, device=self.device)


def _joined(state: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    """A cat state as one CPU tensor: a list before a sync, a tensor after one."""
    if isinstance(state, list):
        state = torch.cat(state) if state else torch.zeros(0)
    return state.detach().cpu()


def _coco_box_map(
    detections: np.ndarray,
    detection_images: np.ndarray,
    truths: np.ndarray,
    truth_images: np.ndarray,
    num_images: int,
    num_classes: int,
) -> tuple[float, float]:
    """COCO mAP@0.5 and mAP@[.5:.95] of xyxy detection rows against xyxy truth rows."""
    # Imported here so that classification and segmentation need no pycocotools.
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    truth_boxes = truths[:, :4].copy()
    truth_boxes[:, 2:] -= truth_boxes[:, :2]
    detection_boxes = detections[:, :4].copy()
    detection_boxes[:, 2:] -= detection_boxes[:, :2]
    dataset = {
        "images": [{"id": i} for i in range(num_images)],
        "categories": [{"id": c} for c in range(num_classes)],
        # Annotation ids start at 1: COCOeval marks "unmatched" with id 0.
        "annotations": [
            {
                "id": k + 1,
                "image_id": image,
                "category_id": int(label),
                "bbox": box,
                "area": box[2] * box[3],
                "iscrowd": 0,
            }
            for k, (image, label, box) in enumerate(
                zip(truth_images.tolist(), truths[:, 4].tolist(), truth_boxes.tolist(), strict=True)
            )
        ],
    }
    results = [
        {"image_id": image, "category_id": int(label), "bbox": box, "score": score}
        for image, label, box, score in zip(
            detection_images.tolist(),
            detections[:, 5].tolist(),
            detection_boxes.tolist(),
            detections[:, 4].tolist(),
            strict=True,
        )
    ]
    # pycocotools reports progress on stdout; validation logs must stay clean.
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO()
        ground_truth.dataset = dataset
        ground_truth.createIndex()
        evaluation = COCOeval(ground_truth, ground_truth.loadRes(results), iouType="bbox")
        # One area range and one detection cap: the two numbers reported need no
        # others, and each extra range would repeat the per-image matching.
        evaluation.params.areaRng = [[0.0, float("inf")]]
        evaluation.params.areaRngLbl = ["all"]
        evaluation.params.maxDets = [100]
        evaluation.evaluate()
        evaluation.accumulate()
    # (iou thresholds, recall points, classes); -1 marks classes without ground truth.
    precision = evaluation.eval["precision"][:, :, :, 0, 0]
    at_50 = precision[np.isclose(evaluation.params.iouThrs, 0.5)]
    return _mean_defined(at_50), _mean_defined(precision)


def _mean_defined(precision: np.ndarray) -> float:
    defined = precision[precision > -1]
    return float(defined.mean()) if defined.size else 0.0


#: Reported name of each single-valued task metric (detection reports several).
_METRIC_NAMES = {task: TASK_METRICS[task] for task in ("cls", "seg")}


class TaskMetrics:
    """Validation metrics of the given tasks, named as the rest of phasetune expects.

    - ``val/cls_acc``: micro accuracy (correct / samples).
    - ``val/seg_miou``: IoU per class over ``num_classes + 1`` classes (background
      included, no ``ignore_index``), averaged over the classes present in the target
      or the prediction. That is torchmetrics' ``average="macro"`` (checked in 1.9):
      it gives zero weight to a class absent from both, so ``zero_division`` never
      applies to an averaged class; a class predicted but absent from the target
      counts with IoU 0.
    - ``val/det_map50``, ``val/det_map``: COCO box mAP@0.5 and mAP@[.5:.95] of the
      decoded detection head output, see :class:`DetectionMeanAP`.

    Under DDP ``compute()`` is a collective call that every rank makes, including a
    rank whose shard was empty: the ranks first agree on which tasks any of them
    updated, then sync and compute those.

    Args:
        tasks: Tasks to track, from ``"cls"``, ``"seg"``, ``"det"``.
        num_classes: Object classes.
        device: Where metric states live (the outputs' device).
        detection_stride: The detection head's stride.
        max_detections: Detections decoded per image.
    """

    def __init__(
        self,
        tasks: Iterable[str],
        num_classes: int,
        device: torch.device | str = "cpu",
        *,
        detection_stride: int = 4,
        max_detections: int = 20,
    ) -> None:
        self.num_classes = num_classes
        self.device = torch.device(device)
        self.detection_stride = detection_stride
        self.max_detections = max_detections
        self.metrics: dict[str, Metric] = {}
        for task in tasks:
            # Predictions are argmaxes, always in range, and targets come from the data set;
            # validating them would cost a torch.unique (a GPU sync) per batch, more than
            # the metric itself.
            if task == "cls":
                metric: Metric = MulticlassAccuracy(
                    num_classes, average="micro", validate_args=False
                )
            elif task == "seg":
                metric = MulticlassJaccardIndex(
                    num_classes + 1, average="macro", validate_args=False
                )
            elif task == "det":
                metric = DetectionMeanAP(num_classes)
            else:
                raise ValueError(f"unknown task {task!r}; use 'cls', 'seg' or 'det'")
            self.metrics[task] = metric.to(device)

    @torch.no_grad()
    def update(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> None:
        """Add one batch of head outputs (logits, raw detection maps) and their targets."""
        for task, output in outputs.items():
            if task not in self.metrics:
                raise ValueError(f"task {task!r} is not tracked; tracked: {list(self.metrics)}")
            if task == "det":
                detections = decode_detections(
                    output, self.num_classes, self.detection_stride, self.max_detections
                )
                self.metrics[task].update(detections, targets[task])
            else:
                self.metrics[task].update(output.argmax(1), targets[task])

    def compute(self) -> dict[str, float]:
        """Metric values of every task updated (on any rank) since the last reset."""
        results: dict[str, float] = {}
        for task in self._updated_tasks():
            value = self.metrics[task].compute()
            if task == "det":
                results["val/det_map50"] = float(value["map50"])
                results["val/det_map"] = float(value["map"])
            else:
                results[_METRIC_NAMES[task]] = float(value)
        return results

    def _updated_tasks(self) -> list[str]:
        counts = torch.tensor(
            [metric.update_count for metric in self.metrics.values()], device=self.device
        )
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
        return [task for task, count in zip(self.metrics, counts.tolist(), strict=True) if count]

    def reset(self) -> None:
        """Forget every update, for the next validation pass."""
        for metric in self.metrics.values():
            metric.reset()
