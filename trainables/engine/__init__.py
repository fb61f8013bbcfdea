"""The phase engine: runs any `PhasePlan` on one worker or as one of N DDP workers.

`run_plan` trains a plan to its end, resuming from the checkpoint its `Reporter`
hands back; how a run reaches a reporter (Ray Tune, Ray Train, or none) is
``trainables.launch``'s concern.

- ``_context``: `EngineContext`, the `Reporter` protocol, precision and data placement.
- ``_checkpoint``: `CheckpointState`, the typed checkpoint, and its files.
- ``_tracking``: the run's position, early stopping, each task's best and forgetting.
- ``_phase_setup``: what a phase trains, and its optimizer.
- ``_ddp``: what keeps DDP workers in step, and the check that they are.
- ``_tensorboard``: rank 0's TensorBoard events.
- ``_epochs``: a worker's device, data and model, and one epoch of training or evaluation.
- ``_loop``: `Trainer`, which walks the phases, and `run_plan`.
"""

from __future__ import annotations

from trainables.engine._checkpoint import (
    CHECKPOINT_FILE,
    CHECKPOINT_REPORTS_FILE,
    CheckpointState,
    read_checkpoint,
)
from trainables.engine._context import PRECISIONS, EngineContext, Reporter, resolve_precision
from trainables.engine._ddp import param_divergence
from trainables.engine._epochs import eval_batch_size
from trainables.engine._loop import run_plan
from trainables.engine._phase_setup import build_optimizer, configure_phase, set_train_mode
from trainables.metric_names import TASK_METRICS, reported_metrics

__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_REPORTS_FILE",
    "PRECISIONS",
    "TASK_METRICS",
    "CheckpointState",
    "EngineContext",
    "Reporter",
    "build_optimizer",
    "configure_phase",
    "eval_batch_size",
    "param_divergence",
    "read_checkpoint",
    "reported_metrics",
    "resolve_precision",
    "run_plan",
    "set_train_mode",
]
