"""The search's proposer: Optuna's sampler over the strategy space, on its study, behind
Tune's searcher interface; and the longest plan, the schedulers' horizon."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from search.config import ExperimentConfig
from search.random_fraction import RandomFractionSampler
from search.sampler import IncrementalTPESampler
from search.study import SoleWriterStorage, StudySearch, rdb_storage
from spaces import SearchSpace
from trainables.launch import plan_for_trial

__all__ = ["build_searcher", "max_epochs", "study_storage"]


def max_epochs(config: ExperimentConfig, space: SearchSpace) -> int:
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
        return rdb_storage(url_or_path)
    path = Path(url_or_path).expanduser().resolve()
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def build_searcher(config: ExperimentConfig, space: SearchSpace, study_url: str) -> Any:
    import optuna

    seed = config.search.seed
    if config.search.sampler == "tpe":
        # Multivariate TPE models the parameters jointly, and ``group`` splits the
        # conditional space into the sets that occur together (one per strategy and
        # branch). One fit per group instead of one per parameter also makes a
        # suggestion 25-40% cheaper at hundreds of trials (benchmarks/searcher_scale.py).
        # IncrementalTPESampler suggests what TPESampler would, without walking the
        # whole history in Python several times per suggestion.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = IncrementalTPESampler(
                seed=seed,
                multivariate=config.search.multivariate,
                # ``group`` is multivariate TPE's way through the conditional space.
                group=config.search.multivariate,
                n_startup_trials=config.search.startup_trials,
            )
        if config.search.random_fraction:
            sampler = RandomFractionSampler(
                sampler,
                config.search.random_fraction,
                after_trials=config.search.startup_trials,
                seed=seed,
            )
    else:
        sampler = optuna.samplers.RandomSampler(seed=seed)
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
        # Read back from memory: the driver is the study's only writer (this also does
        # what Optuna's cache in front of an RDB would).
        storage=SoleWriterStorage(study_storage(study_url)),
    )
