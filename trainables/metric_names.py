"""The name every layer gives the validation metric of each task (a leaf: the engine
reports under these names, and targets, claims and progress lines read them)."""

from __future__ import annotations

__all__ = ["TASK_METRICS"]

#: The validation metric that stands for each task, as the engine reports it.
TASK_METRICS = {"cls": "val/cls_acc", "seg": "val/seg_miou", "det": "val/det_map50"}
