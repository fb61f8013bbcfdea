"""One strategy search: Tuner assembly, run and resume, results and ranking (the best
trial's files: ``search.export``).

The experiment directory is a local path or a URI pyarrow's filesystems accept
(``trainables.storage``); Ray is started here, or joined where an address is given
(``--address``, ``RAY_ADDRESS``, or a Ray job, which sets ``RAY_ADDRESS``).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from analysis.ranking import RankedTrial, rank_trials, ranking_json
from analysis.results import load_results, trial_dirs, trial_records, write_results
from search.config import ConfigError, ExperimentConfig
from search.export import export_to
from search.progress import PlanRecorder, TrialProgress
from search.ray_runtime import (
    STATE_API_WARNING,
    cluster_address,
    ray_running,
    ray_stage,
    state_api_answers,
)
from search.recovery import repair_missing_checkpoints
from search.resources import check_resources, default_concurrency, local_gpus
from search.schedulers import build_scheduler
from search.searcher import build_searcher, max_epochs, study_storage
from search.storage_full import StopWhenStorageIsFull, StorageFull, is_storage_full
from search.study import (
    checkpoint_study,
    fail_trials_not_resumed,
)
from trainables.data import DataError, load_dataset, pin_snapshot
from trainables.launch import LaunchSettings, tune_trainable
from trainables.models import ensure_pretrained
from trainables.storage import ExperimentStore, filesystem_and_path, local_copy
from trainables.strategies import PlanContext

__all__ = ["SearchOutcome", "resume_search", "run_search"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SearchOutcome:
    """What a finished search leaves behind.

    The experiment and best-config files are local paths, or URIs (``str``) where
    the experiment lives behind a remote filesystem.
    """

    experiment_dir: Path | str
    ranked: list[RankedTrial]
    best_yaml: Path | str | None
    best_json: Path | str | None
    wall_seconds: float


def experiment_store(config: ExperimentConfig) -> ExperimentStore:
    """The directory (local or behind a URI) that ``config``'s experiment writes."""
    return ExperimentStore.at(config.storage.experiment_location(config.name))


def prepare_experiment_dir(config: ExperimentConfig, overwrite: bool) -> ExperimentStore:
    """Refuse to run over an existing experiment unless asked; never delete one.

    With ``overwrite`` the old directory is moved aside with a timestamp, so a
    mistaken overwrite loses nothing.
    """
    store = experiment_store(config)
    if store.exists():
        if not overwrite:
            raise ConfigError(
                f"name: experiment {config.name!r} already exists at {store.location};"
                " continue it with `phasetune resume DIR`, choose another --name, or pass"
                " --overwrite to move the old one aside"
            )
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        aside = config.storage.experiment_location(f"{config.name}.replaced-{stamp}")
        store.move_to(aside)
        logger.warning("moved the existing experiment aside to %s", aside)
    return store


def _outcome_path(store: ExperimentStore, *names: str) -> Path | str:
    """A local experiment's files as paths, a remote one's as URIs."""
    return store.uri(*names) if store.remote else Path(store.location, *names)


def run_search(
    config: ExperimentConfig,
    *,
    overwrite: bool = False,
    on_stage: Callable[[str], None] = lambda message: None,
    address: str | None = None,
) -> SearchOutcome:
    """Run the whole search the config describes; rank and export its result.

    ``address`` (or ``RAY_ADDRESS``) joins that Ray cluster instead of starting one.

    Raises:
        ConfigError: the experiment cannot run as configured (nothing is written).
    """
    import time

    import ray
    from ray import tune

    started = time.perf_counter()
    space = config.search_space()
    if not overwrite:
        prepare_experiment_dir(config, overwrite=False)
    # Only a Ray of our own has this machine's resources; a cluster is asked below.
    if not cluster_address(address) and not ray.is_initialized():
        check_resources(config, {"CPU": os.cpu_count() or 1, "GPU": local_gpus()})

    context = pinned_plan_context(config)
    on_stage("preparing data and the pretrained backbone (cached after first use)")
    try:
        load_dataset(context.data)
    except DataError as error:
        raise ConfigError(str(error)) from None
    if context.model.pretrained is not None:
        ensure_pretrained(context.model)

    on_stage(ray_stage(address))
    with ray_running(address):
        available = ray.cluster_resources()
        check_resources(config, available)
        if config.resources.workers_per_trial > 1 and not state_api_answers():
            on_stage(STATE_API_WARNING)
        store = prepare_experiment_dir(config, overwrite)
        store.make()
        settings = launch_settings(config, store, context)
        storage_full = StopWhenStorageIsFull()
        store.write_text("experiment.yaml", _dump_yaml(config.model_dump(mode="json")))
        study_url = _study_url(config, store)
        filesystem, storage_path = filesystem_and_path(store.location)
        tuner = tune.Tuner(
            tune_trainable(settings),
            tune_config=tune.TuneConfig(
                search_alg=build_searcher(config, space, study_url),
                scheduler=build_scheduler(config.search, max_epochs(config, space)),
                num_samples=config.search.num_samples,
                max_concurrent_trials=config.search.max_concurrent_trials
                or default_concurrency(config, available),
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
                # A fresh actor imports Ray, torch and phasetune again: ~6 s per trial on
                # 2 cores. Every trial asks for the same resources, so one actor serves many.
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name="tune",
                storage_path=storage_path,
                storage_filesystem=filesystem,
                failure_config=tune.FailureConfig(
                    max_failures=config.resources.max_failures
                    if config.resources.workers_per_trial == 1
                    else 0
                ),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                callbacks=[
                    *_result_loggers(),
                    TrialProgress(context, config.search.num_samples),
                    PlanRecorder(context, store.location),
                    storage_full,
                ],
                stop=storage_full,
                verbose=0,
            ),
        )
        on_stage(f"searching: {config.search.num_samples} trials")
        with _storage_full_stops(store, storage_full):
            tuner.fit()

    with _storage_full_stops(store, storage_full):
        return _finish(config, store, started)


@contextmanager
def _storage_full_stops(store: ExperimentStore, watcher: StopWhenStorageIsFull) -> Iterator[None]:
    """Turn a full disk, met by a trial or by this process, into one :class:`StorageFull`."""
    try:
        yield
    except Exception as error:
        if is_storage_full(error):
            raise StorageFull(store.location) from None
        raise
    if watcher.full:
        raise StorageFull(store.location)


def _study_url(config: ExperimentConfig, store: ExperimentStore) -> str:
    # A remote storage.path without storage.study is refused by the config.
    return config.storage.study or f"sqlite:///{Path(store.location) / 'study.db'}"


def pinned_plan_context(config: ExperimentConfig) -> PlanContext:
    """The config's plan context with its data on disk pinned as the files are now, so
    that every trial and worker of the search trains on that version of them.

    Raises:
        ConfigError: the data cannot be listed (one line).
    """
    context = config.plan_context()
    try:
        return dataclasses.replace(context, data=pin_snapshot(context.data))
    except DataError as error:
        raise ConfigError(str(error)) from None


def launch_settings(
    config: ExperimentConfig, store: ExperimentStore, context: PlanContext | None = None
) -> LaunchSettings:
    """What every trial of ``config``'s search shares (locations as paths or URIs, so
    trials on any node write to the same experiment); ``context`` as the config gives it
    unless one with its data pinned is passed."""
    return LaunchSettings(
        plan_context=context or config.plan_context(),
        targets=config.target_list(),
        workers=config.resources.workers_per_trial,
        cpus_per_worker=config.resources.cpus_per_worker,
        gpus_per_worker=config.resources.gpus_per_worker,
        tensorboard_root=store.uri("tensorboard"),
        train_storage=store.uri("train_runs"),
        max_failures=config.resources.max_failures,
        precision=config.resources.precision,
        channels_last=config.resources.channels_last,
        data_on_device=config.resources.data_on_device,
    )


def _finish(config: ExperimentConfig, store: ExperimentStore, started: float) -> SearchOutcome:
    """Rank the results, export the best trial and write the result files."""
    import time

    # A local SQLite study's last writes sit in its write-ahead log until folded back.
    checkpoint_study(_study_url(config, store))
    # Ranked from the files the trials wrote, as `phasetune analyze` reads them, so
    # a finished search and a later analysis agree on every status and metric.
    tables = load_results(store.location)
    targets = config.target_list()
    ranked = rank_trials(trial_records(tables.trials), targets)
    best_yaml = best_json = None
    if ranked and not ranked[0].failed:
        best_yaml, best_json = export_to(store, ranked[0], targets, config)
    store.write_text("ranking.json", ranking_json(ranked))
    write_results(store.location, tables)
    return SearchOutcome(
        experiment_dir=_outcome_path(store),
        ranked=ranked,
        best_yaml=best_yaml,
        best_json=best_json,
        wall_seconds=time.perf_counter() - started,
    )


def resume_search(
    experiment_dir: Path | str,
    on_stage: Callable[[str], None] = lambda message: None,
    address: str | None = None,
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

    started = time.perf_counter()
    store = ExperimentStore.at(experiment_dir)
    filesystem, storage_path = filesystem_and_path(store.uri("tune"))
    if not store.is_file("experiment.yaml") or not tune.Tuner.can_restore(
        storage_path, storage_filesystem=filesystem
    ):
        raise ConfigError(
            f"{store.location}: no search to resume here (needs experiment.yaml and tune/);"
            " give the directory `phasetune run` printed"
        )
    config = load_saved_experiment(store)
    repair_missing_checkpoints(store)
    context = pinned_plan_context(config)
    on_stage(ray_stage(address))
    with ray_running(address):
        check_resources(config, ray.cluster_resources())
        tuner = tune.Tuner.restore(
            storage_path,
            trainable=tune_trainable(launch_settings(config, store, context)),
            storage_filesystem=filesystem,
            resume_unfinished=True,
            resume_errored=False,
            restart_errored=False,
        )
        on_stage(f"resuming {config.name}: {config.search.num_samples} trials in all")
        with _storage_full_stops(store, StopWhenStorageIsFull()):
            results = tuner.fit()
    resumed = {Path(result.path).name for result in results}
    _set_aside_unresumed(store, resumed)
    _fail_study_trials_not_resumed(config, store, resumed)
    with _storage_full_stops(store, StopWhenStorageIsFull()):
        return _finish(config, store, started)


def _fail_study_trials_not_resumed(
    config: ExperimentConfig, store: ExperimentStore, resumed: set[str]
) -> None:
    import optuna

    study = optuna.load_study(
        study_name=config.name, storage=study_storage(_study_url(config, store))
    )
    failed = fail_trials_not_resumed(study, resumed)
    if failed:
        logger.warning(
            "study trials %s were interrupted before the search's last saved state and"
            " not resumed; they are marked failed",
            ", ".join(map(str, failed)),
        )


def _set_aside_unresumed(store: ExperimentStore, resumed: set[str]) -> None:
    """Move trials that Tune did not resume to ``interrupted/``: kept, but out of the results.

    A trial started after Tune's last snapshot of the search can report before the
    crash; Tune does not know it on restore and proposes a new trial in its place.
    """
    import pyarrow.fs as pafs

    fs, root = store.filesystem, store.root
    for path in trial_dirs(fs, f"{root}/tune"):
        name = path.rsplit("/", 1)[-1]
        if name in resumed or fs.get_file_info(f"{path}/params.json").type != pafs.FileType.File:
            continue
        target = f"{root}/interrupted/{name}"
        fs.create_dir(f"{root}/interrupted")
        try:
            fs.move(path, target)
        except (OSError, NotImplementedError):  # object stores move files, not folders
            pafs.copy_files(path, target, source_filesystem=fs, destination_filesystem=fs)
            fs.delete_dir(path)


def load_saved_experiment(store: ExperimentStore) -> ExperimentConfig:
    """The experiment file a search saved in its directory (local or remote)."""
    from search.config import load_experiment

    with local_copy(store.uri("experiment.yaml")) as saved:
        return load_experiment(saved)


def _trial_name(trial: Any) -> str:
    return str(trial.trial_id)


def _result_loggers() -> list[Any]:
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [JsonLoggerCallback(), CSVLoggerCallback()]


def _dump_yaml(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)
