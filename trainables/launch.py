"""What one Tune trial runs: build the trial's plan, then run the engine.

A 1-worker trial runs the engine in the Tune function's own process: starting a
Ray Train worker group costs about 10 s per trial and buys nothing without DDP.
N > 1 workers run under a Ray Train ``TorchTrainer`` (Train V2: the Tune function
builds the trainer and calls ``fit``; rank 0's metrics reach Tune through the
trial's own thread, so schedulers see every epoch: ``trainables._report_relay``).
Both paths run the same engine and write the same metrics, checkpoints and
TensorBoard files.

The engine knows nothing of Ray: its reporters for Tune and for Ray Train workers
live here, and both restore a checkpoint through `_read_ray_checkpoint`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from analysis.targets import Target
from trainables.atomic import replaced_atomically
from trainables.engine import (
    CHECKPOINT_FILE,
    CheckpointState,
    EngineContext,
    read_checkpoint,
    run_plan,
)
from trainables.phases import PhasePlan
from trainables.storage import TensorboardMirror, filesystem_and_path, is_remote, join_location
from trainables.strategies import PlanContext, build_plan

__all__ = [
    "LaunchSettings",
    "LocalReporter",
    "plan_for_trial",
    "quiet_train_logs",
    "torch_threads",
    "train_locally",
    "train_loop_per_worker",
    "trial_driver",
    "tune_trainable",
    "trial_resources",
]


@dataclasses.dataclass(frozen=True)
class LaunchSettings:
    """Experiment-wide settings every trial of a search shares.

    Attributes:
        plan_context: Model, data, seed and epoch scale for building plans.
        targets: What ``target_score`` measures.
        workers: Ray Train workers per trial (1 runs in-process).
        cpus_per_worker, gpus_per_worker: Resources of each worker.
        tensorboard_root: Each trial writes TensorBoard events to
            ``<tensorboard_root>/<trial id>``; None writes none. A path or a URI.
        train_storage: Where Ray Train keeps the runs of N-worker trials (a path
            or a URI).
        max_failures: Worker-group restarts from the last checkpoint per trial.
        precision, channels_last, data_on_device: How workers use a GPU; see
            `EngineContext`.
    """

    plan_context: PlanContext
    targets: tuple[Target, ...]
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    tensorboard_root: str | None = None
    train_storage: str | None = None
    max_failures: int = 0
    precision: str = "auto"
    channels_last: bool | None = None
    data_on_device: bool | None = None


#: Times a trial's worker group may fail to start (each wait is Ray Train's
#: RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S, 60 s by default) before the trial fails.
#: Ray Train's own default retries forever: where the workers can never be placed, as
#: when a dead Train run's placement group still holds the CPUs (its cleaner needs
#: Ray's state API, and without it never frees them), the trial then waits with no
#: worker and no result, and the search hangs.
WORKER_GROUP_START_RETRIES = 5


def trial_resources(settings: LaunchSettings) -> dict[str, float]:
    """Resources the Tune trial itself holds.

    In-process trials hold the worker's share. A trial that starts a worker group
    holds no CPU itself (its workers do): on 2 CPUs a 2-worker trial would
    otherwise need 3 and never start. Ray refuses a bare ``{"cpu": 0}``.
    """
    if settings.workers == 1:
        return {"cpu": settings.cpus_per_worker, "gpu": settings.gpus_per_worker}
    return {"cpu": 0, "memory": 1}


def tune_trainable(settings: LaunchSettings) -> Any:
    """``trial_driver`` as Tune runs it: bound to ``settings``, holding its resources."""
    from ray import tune

    return tune.with_resources(
        tune.with_parameters(trial_driver, settings=settings), trial_resources(settings)
    )


def plan_for_trial(config: dict[str, Any], context: PlanContext) -> PhasePlan:
    """The plan for a trial config ``{"strategy": name, name: {param: value}}``."""
    strategy = config["strategy"]
    return build_plan(strategy, config.get(strategy, {}), context)


def _hparams(config: dict[str, Any]) -> dict[str, Any]:
    strategy = config["strategy"]
    params = {f"{strategy}/{name}": value for name, value in config.get(strategy, {}).items()}
    return {"strategy": strategy, **params}


class _TuneReporter:
    """Reports from the Tune function's own process (in-process trials)."""

    rank = 0
    world_size = 1

    def __init__(self, before_report: Callable[[], None] | None = None) -> None:
        self.before_report = before_report

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        from ray import tune

        if self.before_report is not None:
            # Tune may stop the trial once it has this report; its events go first.
            self.before_report()

        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(metrics, checkpoint=checkpoint)

    def restore(self) -> dict[str, Any] | None:
        from ray import tune

        return _read_ray_checkpoint(tune.get_checkpoint())


def _read_ray_checkpoint(checkpoint: Any) -> dict[str, Any] | None:
    """The engine's state in a Ray checkpoint (Tune's or Train's; both are read through
    ``as_directory``), or None when the run has none to resume from."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return read_checkpoint(directory)


class _RayTrainReporter:
    """Reports from inside a Ray Train worker (every rank reports, rank 0 checkpoints)."""

    def __init__(self) -> None:
        import ray.train

        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)

    def restore(self) -> dict[str, Any] | None:
        import ray.train

        return _read_ray_checkpoint(ray.train.get_checkpoint())


def quiet_train_logs() -> None:
    """Ray Train logs every report with all its metrics at INFO, per worker and epoch,
    which buries the search's own output; warnings and errors still come through."""
    import logging

    from trainables._ray_train_internals import report_logger_names

    for name in report_logger_names():
        logging.getLogger(name).setLevel(logging.WARNING)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: ``config`` holds the plan and context as dicts."""
    quiet_train_logs()
    plan = PhasePlan.from_dict(config["plan"])
    context = EngineContext.from_dict(config["context"])
    run_plan(plan, context, _RayTrainReporter())


def torch_threads(cpus_per_worker: float) -> int:
    """Torch intra-op threads of a worker given ``cpus_per_worker`` CPUs (at least 1)."""
    return max(1, int(cpus_per_worker))


def trial_driver(config: dict[str, Any], settings: LaunchSettings) -> None:
    """Tune function trainable: one trial of the strategy search."""
    from ray import tune

    quiet_train_logs()
    plan = plan_for_trial(config, settings.plan_context)
    trial_id = tune.get_context().get_trial_id()
    context = EngineContext(
        targets=settings.targets,
        tensorboard_dir=(
            join_location(settings.tensorboard_root, trial_id)
            if settings.tensorboard_root
            else None
        ),
        hparams=_hparams(config),
        threads=torch_threads(settings.cpus_per_worker),
        use_gpu=settings.gpus_per_worker > 0,
        precision=settings.precision,
        channels_last=settings.channels_last,
        data_on_device=settings.data_on_device,
    )
    if settings.workers > 1:
        _fit_worker_group(plan, context, settings, run_name=f"train-{trial_id}")
    elif context.tensorboard_dir and is_remote(context.tensorboard_dir):
        with TensorboardMirror(context.tensorboard_dir) as mirror:
            local = dataclasses.replace(context, tensorboard_dir=mirror.local)
            run_plan(plan, local, _TuneReporter(before_report=mirror.sync))
    else:
        run_plan(plan, context, _TuneReporter())


def _worker_loop(config: dict[str, Any]) -> None:
    """The engine's Ray Train entry point, with rank 0's TensorBoard events mirrored
    to a remote experiment (``SummaryWriter`` writes only local files)."""
    import ray.train

    tensorboard_dir = config["context"].get("tensorboard_dir")
    if not (tensorboard_dir and is_remote(tensorboard_dir)):
        train_loop_per_worker(config)
        return
    if ray.train.get_context().get_world_rank() != 0:
        train_loop_per_worker({**config, "context": {**config["context"], "tensorboard_dir": None}})
        return
    with TensorboardMirror(tensorboard_dir) as mirror:
        local = {**config["context"], "tensorboard_dir": mirror.local}
        train_loop_per_worker({**config, "context": local})


def _fit_worker_group(
    plan: PhasePlan, context: EngineContext, settings: LaunchSettings, run_name: str
) -> None:
    from ray.util.queue import Queue

    # Unbounded: the Train run never waits for the trial to pass a report on.
    reports = Queue(actor_options={"num_cpus": 0})
    try:
        _fit_relaying_reports(plan, context, settings, run_name, reports)
    finally:
        reports.shutdown(force=True)


def _fit_relaying_reports(
    plan: PhasePlan, context: EngineContext, settings: LaunchSettings, run_name: str, reports: Any
) -> None:
    """Run the trial's Train run, its reports relayed to Tune through ``reports``."""
    import ray.train
    from ray import tune
    from ray.train.torch import TorchTrainer

    from trainables._ray_train_internals import abort_train_run
    from trainables._report_relay import ReportsToTrial, relay_until_fit_returns

    resources = {"CPU": settings.cpus_per_worker}
    if settings.gpus_per_worker:
        resources["GPU"] = settings.gpus_per_worker
    filesystem, storage_path = (
        filesystem_and_path(settings.train_storage) if settings.train_storage else (None, None)
    )
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"plan": plan.to_dict(), "context": context.to_dict()},
        scaling_config=ray.train.ScalingConfig(
            num_workers=settings.workers,
            use_gpu=settings.gpus_per_worker > 0,
            resources_per_worker=resources,
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            callbacks=[ReportsToTrial(reports)],
            failure_config=ray.train.FailureConfig(
                max_failures=settings.max_failures,
                controller_failure_limit=WORKER_GROUP_START_RETRIES,
            ),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    relay_until_fit_returns(trainer.fit, reports, tune.report, abort_train_run)


class LocalReporter:
    """Reports of a run outside Ray (``phasetune train``): kept in memory, last
    checkpoint on disk so an interrupted retrain can continue."""

    rank = 0
    world_size = 1

    def __init__(
        self,
        checkpoint_dir: str | os.PathLike[str],
        on_report: Callable[[dict[str, Any]], None] | None = None,
        resume: bool = False,
    ) -> None:
        self.checkpoint_path = Path(checkpoint_dir) / CHECKPOINT_FILE
        self.on_report = on_report
        self.resume = resume
        self.history: list[dict[str, Any]] = []

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        self.history.append(dict(metrics))
        if checkpoint_dir:
            with replaced_atomically(self.checkpoint_path) as partial:
                shutil.copyfile(os.path.join(checkpoint_dir, CHECKPOINT_FILE), partial)
        if self.on_report is not None:
            self.on_report(metrics)

    def restore(self) -> dict[str, Any] | None:
        if not (self.resume and self.checkpoint_path.exists()):
            return None
        return read_checkpoint(self.checkpoint_path.parent)


def train_locally(
    plan: PhasePlan,
    targets: tuple[Target, ...],
    output_dir: str | os.PathLike[str],
    *,
    on_report: Callable[[dict[str, Any]], None] | None = None,
    resume: bool = False,
    threads: int | None = None,
    precision: str = "auto",
) -> LocalReporter:
    """Run ``plan`` in this process (on its GPU when it has one), writing TensorBoard
    events and the last checkpoint under ``output_dir``; return the reporter with
    every epoch's metrics.

    Writes ``model.pt`` (the final weights) and ``best_<task>.pt`` (the weights at
    each task's best validation score).
    """
    output = Path(output_dir)
    reporter = LocalReporter(output / "checkpoint", on_report=on_report, resume=resume)
    context = EngineContext(
        targets=targets,
        tensorboard_dir=str(output / "tensorboard"),
        hparams={"strategy": plan.strategy},
        threads=threads,
        use_gpu=torch.cuda.is_available(),
        precision=precision,
    )
    run_plan(plan, context, reporter)
    # The trained weights on their own, loadable into build_model(plan.model, ...),
    # and each task's best weights beside them.
    state = CheckpointState.from_dict(read_checkpoint(reporter.checkpoint_path.parent))
    torch.save(state.model, output / "model.pt")
    for task, best in state.task_best.items():
        torch.save(best.model, output / f"best_{task}.pt")
    return reporter
