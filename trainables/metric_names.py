"""The name every layer gives the validation metric of each task (a leaf: the engine
reports under these names, and targets, claims and progress lines read them)."""

from __future__ import annotations

__all__ = ["TASK_METRICS", "reported_metrics"]

#: The validation metric that stands for each task, as the engine reports it.
TASK_METRICS = {"cls": "val/cls_acc", "seg": "val/seg_miou", "det": "val/det_map50"}


def reported_metrics(tasks: tuple[str, ...]) -> tuple[str, ...]:
    """Metric names every epoch's report carries for ``tasks`` (targets may use them)."""
    names = ["val/loss", "train/loss"]
    if "cls" in tasks:
        names += ["val/acc", "train/acc"]
    names += [TASK_METRICS[task] for task in tasks]
    if "det" in tasks:
        names.append("val/det_map")
    for prefix in ("train/loss/", "val/loss/", "weight/", "forgetting/"):
        names += [prefix + task for task in tasks]
    return tuple(names)
