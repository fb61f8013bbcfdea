"""Rank 0's TensorBoard events: the trial's HParams at the start, every numeric metric
each epoch.

``torch.utils.tensorboard`` is imported only here and only when a run writes events:
it pulls in TensorBoard, which only rank 0 of a run that logs needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from trainables.engine._context import EngineContext
from trainables.metric_names import TASK_METRICS
from trainables.phases import PhasePlan

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["log_metrics", "open_writer"]


def open_writer(context: EngineContext, plan: PhasePlan) -> SummaryWriter:
    """A SummaryWriter with the trial's HParams written at the start.

    Writing the HParams session-start summary now (not when the trial ends, as
    Tune does) makes running trials comparable in TensorBoard's HParams view.
    """
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    writer = SummaryWriter(log_dir=context.tensorboard_dir)
    hparam_values = {
        name: value if isinstance(value, (int, float, str, bool)) else str(value)
        for name, value in context.hparams.items()
    }
    hparam_values.setdefault("strategy", plan.strategy)
    names = ["val/loss", "target_score"]
    if "cls" in plan.tasks:
        names.append("val/acc")
    if len(plan.tasks) > 1:
        names += [TASK_METRICS[task] for task in plan.tasks]
        names += [f"forgetting/{task}" for task in plan.tasks]
    metric_names = dict.fromkeys(names, 0.0)
    _, session_start, _ = hparams(hparam_values, metric_names)
    # Only this trial's session start: an experiment summary per trial would list
    # only this trial's parameters, and TensorBoard would show whichever it read
    # first. Without one, it builds the experiment from every trial's session.
    writer.file_writer.add_summary(session_start)
    return writer


def log_metrics(writer: SummaryWriter, metrics: Mapping[str, Any], step: int) -> None:
    """Every numeric metric as a scalar at ``step``, flushed so TensorBoard shows the
    epoch while the trial runs."""
    for name, value in metrics.items():
        if isinstance(value, (int, float)):
            writer.add_scalar(name, value, step)
    writer.flush()
