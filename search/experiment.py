"""One strategy search: Ray start, Tuner assembly, results, ranking and export."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from analysis.export import export_best
from analysis.ranking import RankedTrial, rank_trials
from analysis.results import load_results, trial_records, write_results
from search.config import ConfigError, ExperimentConfig
from search.progress import PlanRecorder, TrialProgress
from search.schedulers import build_scheduler
from search.study import StudySearch
from spaces import SearchSpace
from trainables.data import load_dataset
from trainables.launch import LaunchSettings, plan_for_trial, tune_trainable
from trainables.models import ensure_pretrained

__all__ = [
    "SearchOutcome",
    "configure_runtime",
    "resume_search",
    "run_search",
    "start_ray",
    "study_storage",
]

logger = logging.getLogger(__name__)

#: Ray settings phasetune needs, applied unless the user set them already.
RAY_ENVIRONMENT = {
    # Each ray.train.report otherwise waits for the controller's 2 s poll.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
    # phasetune writes its own TensorBoard events (per-task tags, HParams at
    # trial start); Tune's copies would show every scalar twice.
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_DEDUP_LOGS": "1",
    # The old output engine is the one that stays silent at verbose=0; phasetune
    # prints its own line per trial event.
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_RESULT_BUFFER_LENGTH": "1",
    # Train workers keep print() as it is: the patch logs every print even inside
    # contextlib.redirect_stdout, so pycocotools' progress lines on each
    # evaluation could not be silenced.
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    # Keeping two checkpoints per trial forces an experiment snapshot when a trial
    # has written two more; for small trials that is often and cheap, not a problem.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}


@dataclasses.dataclass(frozen=True)
class SearchOutcome:
    """What a finished search leaves behind."""

    experiment_dir: Path
    ranked: list[RankedTrial]
    best_yaml: Path | None
    best_json: Path | None
    wall_seconds: float


class _AlreadyDeletedCheckpoint(logging.Filter):
    """Drops Tune's error for deleting a checkpoint that is already gone.

    After a crash the restored experiment state can list a checkpoint the trial had
    already rotated out; Tune then logs a traceback while deleting it again,
    although nothing is lost.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        deleting = "Error handling checkpoint" in str(record.msg)
        return not (deleting and isinstance(error, FileNotFoundError))


def configure_runtime() -> None:
    """Environment and logging defaults for a quiet, fast local run."""
    for name, value in RAY_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Ray's default (token authentication on a local cluster) is kept; only its
    # notice on every start is not repeated to the user.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.ERROR
    )
    controller = logging.getLogger("ray.tune.execution.tune_controller")
    if not any(isinstance(f, _AlreadyDeletedCheckpoint) for f in controller.filters):
        controller.addFilter(_AlreadyDeletedCheckpoint())


def start_ray(num_cpus: int | None = None) -> bool:
    """Connect to ``RAY_ADDRESS`` if set, else start Ray on this machine.

    Returns:
        True when this call started Ray (so the caller shuts it down).
    """
    import ray

    if ray.is_initialized():
        return False
    configure_runtime()
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            logging_level=logging.WARNING,
        )
    return True


@contextmanager
def ray_running() -> Iterator[None]:
    """Ray for the duration of the block: reused if already up, else started and
    shut down afterwards."""
    import ray

    started = start_ray()
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def _max_epochs(config: ExperimentConfig, space: SearchSpace) -> int:
    """Longest plan the space can produce: the scheduler's horizon."""
    context = config.plan_context()
    longest = 1
    for strategy in space.strategies:
        for point in strategy.extreme_points():
            plan = plan_for_trial(
                {"strategy": strategy.strategy, strategy.strategy: point}, context
            )
            longest = max(longest, plan.total_epochs)
    return longest


def study_storage(url_or_path: str) -> Any:
    """The Optuna storage an experiment's ``storage.study`` names: an RDB URL, or a
    journal file path (anything without ``://``)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if "://" in url_or_path:
        return optuna.storages.RDBStorage(url_or_path)
    path = Path(url_or_path).expanduser().resolve()
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _searcher(config: ExperimentConfig, space: SearchSpace, study_url: str) -> Any:
    import optuna

    seed = config.search.seed
    sampler = (
        optuna.samplers.TPESampler(seed=seed)
        if config.search.sampler == "tpe"
        else optuna.samplers.RandomSampler(seed=seed)
    )
    points = space.points_to_evaluate() if config.search.evaluate_baselines else None
    metric: str | list[str] = "target_score"
    mode: str | list[str] = "max"
    if config.search.objective == "pareto":
        targets = config.target_list()
        metric = [target.metric for target in targets]
        mode = [target.direction for target in targets]
    return StudySearch(
        space=space.define_by_run,
        metric=metric,
        mode=mode,
        points_to_evaluate=points[: config.search.num_samples] if points else None,
        sampler=sampler,
        study_name=config.name,
        storage=study_storage(study_url),
    )


def check_resources(config: ExperimentConfig, available: dict[str, float]) -> None:
    """Refuse a trial that asks for more than the cluster has (it would never start)."""
    resources = config.resources
    cpus = resources.workers_per_trial * resources.cpus_per_worker
    gpus = resources.workers_per_trial * resources.gpus_per_worker
    if cpus > available.get("CPU", 0):
        raise ConfigError(
            f"resources: a trial needs {cpus:g} CPUs ({resources.workers_per_trial} workers x"
            f" {resources.cpus_per_worker:g}) but Ray has {available.get('CPU', 0):g};"
            " lower resources.workers_per_trial or resources.cpus_per_worker"
        )
    if gpus > available.get("GPU", 0):
        raise ConfigError(
            f"resources: a trial needs {gpus:g} GPUs but Ray has {available.get('GPU', 0):g};"
            " set resources.gpus_per_worker to 0 or run on a cluster with GPUs"
        )


def _default_concurrency(config: ExperimentConfig, available: dict[str, float]) -> int:
    resources = config.resources
    by_cpu = available.get("CPU", 1) // (resources.workers_per_trial * resources.cpus_per_worker)
    limit = int(max(1, by_cpu))
    if resources.gpus_per_worker:
        by_gpu = available.get("GPU", 0) // (
            resources.workers_per_trial * resources.gpus_per_worker
        )
        limit = min(limit, int(max(1, by_gpu)))
    return limit


def prepare_experiment_dir(config: ExperimentConfig, overwrite: bool) -> Path:
    """Refuse to run over an existing experiment unless asked; never delete one.

    With ``overwrite`` the old directory is moved aside with a timestamp, so a
    mistaken overwrite loses nothing.
    """
    experiment_dir = config.experiment_dir()
    if experiment_dir.exists():
        if not overwrite:
            raise ConfigError(
                f"name: experiment {config.name!r} already exists at {experiment_dir};"
                " continue it with `phasetune resume DIR`, choose another --name, or pass"
                " --overwrite to move the old one aside"
            )
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        aside = experiment_dir.with_name(f"{experiment_dir.name}.replaced-{stamp}")
        shutil.move(str(experiment_dir), str(aside))
        logger.warning("moved the existing experiment aside to %s", aside)
    return experiment_dir


def run_search(
    config: ExperimentConfig,
    *,
    overwrite: bool = False,
    on_stage: Callable[[str], None] = lambda message: None,
) -> SearchOutcome:
    """Run the whole search the config describes; rank and export its result.

    Raises:
        ConfigError: the experiment cannot run as configured (nothing is written).
    """
    import time

    import ray
    from ray import tune

    started = time.perf_counter()
    space = config.search_space()
    experiment_dir = config.experiment_dir()
    if experiment_dir.exists() and not overwrite:
        prepare_experiment_dir(config, overwrite=False)
    if not os.environ.get("RAY_ADDRESS") and not ray.is_initialized():
        check_resources(config, {"CPU": os.cpu_count() or 1, "GPU": _local_gpus()})

    context = config.plan_context()
    on_stage("preparing data and the pretrained backbone (cached after first use)")
    load_dataset(context.data)
    if context.model.pretrained is not None:
        ensure_pretrained(context.model)

    on_stage("starting Ray")
    with ray_running():
        available = ray.cluster_resources()
        check_resources(config, available)
        experiment_dir = prepare_experiment_dir(config, overwrite)
        experiment_dir.mkdir(parents=True)
        settings = launch_settings(config, experiment_dir)
        (experiment_dir / "experiment.yaml").write_text(_dump_yaml(config.model_dump(mode="json")))
        study_url = config.storage.study or f"sqlite:///{experiment_dir / 'study.db'}"
        tuner = tune.Tuner(
            tune_trainable(settings),
            tune_config=tune.TuneConfig(
                search_alg=_searcher(config, space, study_url),
                scheduler=build_scheduler(config.search, _max_epochs(config, space)),
                num_samples=config.search.num_samples,
                max_concurrent_trials=config.search.max_concurrent_trials
                or _default_concurrency(config, available),
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name="tune",
                storage_path=str(experiment_dir),
                failure_config=tune.FailureConfig(
                    max_failures=config.resources.max_failures
                    if config.resources.workers_per_trial == 1
                    else 0
                ),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                callbacks=[
                    *_result_loggers(),
                    TrialProgress(context, config.search.num_samples),
                    PlanRecorder(context, str(experiment_dir)),
                ],
                verbose=0,
            ),
        )
        on_stage(f"searching: {config.search.num_samples} trials")
        tuner.fit()

    return _finish(config, experiment_dir, started)


def launch_settings(config: ExperimentConfig, experiment_dir: Path) -> LaunchSettings:
    """What every trial of ``config``'s search shares."""
    return LaunchSettings(
        plan_context=config.plan_context(),
        targets=config.target_list(),
        workers=config.resources.workers_per_trial,
        cpus_per_worker=config.resources.cpus_per_worker,
        gpus_per_worker=config.resources.gpus_per_worker,
        tensorboard_root=str(experiment_dir / "tensorboard"),
        train_storage=str(experiment_dir / "train_runs"),
        max_failures=config.resources.max_failures,
    )


def _finish(config: ExperimentConfig, experiment_dir: Path, started: float) -> SearchOutcome:
    """Rank the results, export the best trial and write the result files."""
    import time

    # Ranked from the files the trials wrote, as `phasetune analyze` reads them, so
    # a finished search and a later analysis agree on every status and metric.
    tables = load_results(str(experiment_dir))
    targets = config.target_list()
    ranked = rank_trials(trial_records(tables.trials), targets)
    best_yaml = best_json = None
    if ranked and not ranked[0].failed:
        best_yaml, best_json = export_best(
            ranked[0],
            targets,
            experiment_dir,
            experiment=config.name,
            experiment_dir=str(experiment_dir),
            epoch_scale=config.search.epoch_scale,
        )
    write_ranking(ranked, experiment_dir / "ranking.json")
    write_results(str(experiment_dir), tables)
    return SearchOutcome(
        experiment_dir=experiment_dir,
        ranked=ranked,
        best_yaml=best_yaml,
        best_json=best_json,
        wall_seconds=time.perf_counter() - started,
    )


def resume_search(
    experiment_dir: Path, on_stage: Callable[[str], None] = lambda message: None
) -> SearchOutcome:
    """Continue an interrupted search where it stopped.

    Finished trials are kept and never run again; trials that were running
    continue from their last checkpoint (phase and epoch included); the searcher
    comes back as Tune last saved it, on the same persisted Optuna study; the
    search ends with the configured number of trials.

    Raises:
        ConfigError: ``experiment_dir`` is not a search that can be resumed.
    """
    import time

    import ray
    from ray import tune

    from search.config import load_experiment

    started = time.perf_counter()
    experiment_dir = Path(experiment_dir).resolve()
    saved = experiment_dir / "experiment.yaml"
    tune_dir = experiment_dir / "tune"
    if not saved.is_file() or not tune.Tuner.can_restore(str(tune_dir)):
        raise ConfigError(
            f"{experiment_dir}: no search to resume here (needs experiment.yaml and tune/);"
            " give the directory `phasetune run` printed"
        )
    config = load_experiment(saved)
    on_stage("starting Ray")
    with ray_running():
        check_resources(config, ray.cluster_resources())
        tuner = tune.Tuner.restore(
            str(tune_dir),
            trainable=tune_trainable(launch_settings(config, experiment_dir)),
            resume_unfinished=True,
            resume_errored=False,
            restart_errored=False,
        )
        on_stage(f"resuming {config.name}: {config.search.num_samples} trials in all")
        tuner.fit()
    return _finish(config, experiment_dir, started)


def write_ranking(ranked: list[RankedTrial], path: Path) -> None:
    import json

    rows = [
        {
            "rank": item.rank,
            "trial_id": item.record.trial_id,
            "strategy": item.record.strategy,
            "status": item.record.status,
            "targets_met": item.targets_met,
            "target_score": item.target_score,
            "epochs": item.record.epochs,
            "params": item.record.params,
            "metrics": {
                k: v for k, v in item.record.metrics.items() if isinstance(v, (int, float, str))
            },
            "error": item.record.error,
        }
        for item in ranked
    ]
    path.write_text(json.dumps(rows, indent=2, default=str) + "\n")


def _trial_name(trial: Any) -> str:
    return str(trial.trial_id)


def _result_loggers() -> list[Any]:
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [JsonLoggerCallback(), CSVLoggerCallback()]


def _dump_yaml(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


def _local_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - a broken CUDA setup means no usable GPU here
        return 0
