"""The searches a user would pick instead of phasetune's, run on phasetune's own engine,
space, data and documented recipes, for ``search_efficiency.py``.

- ``optuna-hyperband``: Optuna alone. ``TPESampler`` with its defaults,
  ``HyperbandPruner`` over epochs, the documents' recipes enqueued first
  (``study.enqueue_trial``); one trial at a time, in this process.
- ``tune-optuna-asha``: what a Ray user writes first. Tune's ``OptunaSearch`` over
  the same define-by-run space with the recipes as ``points_to_evaluate``, and Tune's
  ``ASHAScheduler`` (one set of rungs for every trial); as many trials at once as
  phasetune runs.
- ``neps-priorband``: NePS PriorBand, expert priors plus multi-fidelity. Each strategy is
  a ``neps.Operation`` branch of one categorical; every parameter's prior is the value
  of its strategy's first documented recipe (medium confidence), the strategy's prior
  the first strategy with a recipe (low confidence); epochs are the fidelity. A
  promoted configuration continues from its checkpoint (the engine resumes exactly).
  One trial at a time, in this process.

Every peer trains the plans phasetune would build for the same parameters
(``plan_for_trial``), with the same seed, and optimises the same ``target_score``.
Each trained epoch is appended to one :class:`EpochLog`, in the order it was trained;
the budget (phasetune's epochs for the seed) is enforced there, so a trial that is
training when it runs out ends after the budget's last epoch, whatever the peer's own
accounting (NePS checks its cost budget only before an evaluation).

The peers are optional: NePS installs in an environment of its own (see
``docs/benchmarks.md``); a peer whose package does not import says so in one line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import math
import os
import random
import re
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from search.config import ExperimentConfig
from search.searcher import max_epochs
from spaces import Categorical, Fixed, FloatRange, IntRange, SearchSpace, StrategySpace
from trainables.engine import CHECKPOINT_FILE, EngineContext, run_plan
from trainables.launch import plan_for_trial

__all__ = [
    "PEERS",
    "BudgetSpent",
    "EpochLog",
    "PeerOutcome",
    "missing_package",
    "neps_space",
    "target_metrics",
]

#: The epochs before a trial's first comparison, and the share (1/this) that goes on at
#: each rung: phasetune's own defaults (``search.grace_period``, ``reduction_factor``).
GRACE_EPOCHS = 2
REDUCTION_FACTOR = 3

#: What each epoch's line in the log keeps besides the targets' metrics.
LOGGED = ("epoch", "val/acc", "target_score", "targets_met", "plan_complete")


class BudgetSpent(Exception):
    """The search's epoch budget ran out during this epoch's report."""


class EpochLog:
    """Every epoch a search trains, one JSON line each, in the order they are trained.

    Trials in other processes (Tune's) append to the same file; a lock keeps each line
    whole and its count exact.
    """

    def __init__(self, path: Path, budget: int, metrics: tuple[str, ...]) -> None:
        self.path, self.budget, self.metrics = path, budget, (*LOGGED, *metrics)
        path.touch()

    def record(self, trial: str, point: Mapping[str, Any], metrics: Mapping[str, Any]) -> None:
        """Append one epoch of ``trial`` (the trial config ``point``); BudgetSpent when
        it was the budget's last."""
        line: dict[str, Any] = {"t": time.time(), "trial": trial, "point": point}
        line.update({k: _number(metrics[k]) for k in self.metrics if k in metrics})
        with open(self.path, "a+") as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            file.seek(0)
            spent = sum(1 for _ in file)
            if spent < self.budget:
                file.write(json.dumps(line) + "\n")
                spent += 1
        if spent >= self.budget:
            raise BudgetSpent

    def spent(self) -> int:
        with open(self.path) as file:
            return sum(1 for _ in file)

    def epochs(self) -> list[tuple[float, int, dict[str, Any]]]:
        """(seconds since the first epoch's end, trial's start order from 1, metrics)."""
        lines = [json.loads(line) for line in self.path.read_text().splitlines() if line]
        order: dict[str, int] = {}
        first = lines[0]["t"] if lines else 0.0
        return [
            (line["t"] - first, order.setdefault(line["trial"], len(order) + 1), line)
            for line in lines
        ]

    def best(self) -> dict[str, Any]:
        """The best trial's last epoch, ranked as phasetune ranks: targets met, then
        ``target_score``, then fewer epochs."""
        last: dict[str, dict[str, Any]] = {}
        for _, _, line in self.epochs():
            last[line["trial"]] = line
        if not last:
            return {"target_score": -math.inf, "val/acc": math.nan, "trial": None}
        return max(
            last.values(),
            key=lambda m: (m.get("targets_met", 0), m["target_score"], -m.get("epoch", 0)),
        )


def target_metrics(config: ExperimentConfig) -> tuple[str, ...]:
    """The metrics of ``config``'s targets, which every epoch's line keeps."""
    return tuple(target.metric for target in config.target_list())


def _number(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


class _Pause(Exception):
    """The trial reached the epoch it was asked to train to."""


class _Reporter:
    """In-process reporter: logs each epoch, hands it on, and pauses at ``until``."""

    rank = 0
    world_size = 1

    def __init__(
        self,
        state: dict[str, Any] | None,
        on_epoch: Callable[[dict[str, Any]], None],
        until: int | None = None,
        save_to: Path | None = None,
    ) -> None:
        self.state, self.on_epoch, self.until, self.save_to = state, on_epoch, until, save_to
        self.last: dict[str, Any] | None = None

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        self.last = metrics
        at_pause = self.until is not None and metrics["epoch"] >= self.until
        if self.save_to is not None and checkpoint_dir is not None:
            # Every epoch: a trial the budget ends mid-way still leaves its checkpoint.
            shutil.copyfile(os.path.join(checkpoint_dir, CHECKPOINT_FILE), self.save_to)
        self.on_epoch(metrics)
        if at_pause and not metrics.get("plan_complete"):
            raise _Pause

    def restore(self) -> dict[str, Any] | None:
        return self.state


@dataclasses.dataclass
class _Runner:
    """Trains plans of one experiment in this process, logging every epoch."""

    config: ExperimentConfig
    log: EpochLog
    threads: int

    def __post_init__(self) -> None:
        self.context = self.config.plan_context()
        self.engine = EngineContext(targets=self.config.target_list(), threads=self.threads)
        #: The last epoch trained, logged or not, and the epochs of the last ``train``
        #: (also where it raised).
        self.last: dict[str, Any] | None = None
        self.trained = 0

    def train(
        self,
        trial: str,
        point: Mapping[str, Any],
        on_epoch: Callable[[dict[str, Any]], None] = lambda metrics: None,
        until: int | None = None,
        resume_from: Path | None = None,
        save_to: Path | None = None,
    ) -> tuple[dict[str, Any] | None, int]:
        """Train ``point``'s plan (from ``resume_from``'s checkpoint) to epoch ``until``
        or its end. Returns its last metrics and the epochs trained here; BudgetSpent
        goes through."""
        plan = plan_for_trial(dict(point), self.context)
        state = (
            torch.load(resume_from, weights_only=True)
            if resume_from is not None and resume_from.exists()
            else None
        )
        self.trained = 0

        def epoch_done(metrics: dict[str, Any]) -> None:
            self.trained += 1
            self.last = metrics  # before the log, which may end the search here
            self.log.record(trial, point, metrics)
            on_epoch(metrics)

        if state is not None and until is not None and state["position"]["global_epoch"] >= until:
            return (state["reports"][-1] if state["reports"] else None), 0
        reporter = _Reporter(state, epoch_done, until, save_to)
        with contextlib.suppress(_Pause):
            run_plan(plan, self.engine, reporter)
        last = reporter.last
        if last is None and state is not None and state["reports"]:
            last = state["reports"][-1]  # nothing left of the plan to train
        return last, self.trained


@dataclasses.dataclass(frozen=True)
class PeerOutcome:
    """What a peer's search found, read from its epoch log."""

    best: dict[str, Any]
    trials: int
    wall_seconds: float


def _point(strategy: str, params: Mapping[str, Any]) -> dict[str, Any]:
    return {"strategy": strategy, strategy: dict(params)}


def _from_optuna(params: Mapping[str, Any], fixed: Mapping[str, Any]) -> dict[str, Any]:
    """A trial config from Optuna's flat ``strategy/param`` names."""
    strategy = params["strategy"]
    prefix = f"{strategy}/"
    values = {
        name[len(prefix) :]: value
        for name, value in {**params, **fixed}.items()
        if name.startswith(prefix)
    }
    return _point(strategy, values)


def _enqueued(space: SearchSpace) -> list[dict[str, Any]]:
    """The documents' recipes as Optuna parameters, less the fixed ones (not sampled)."""
    points = []
    for point in space.points_to_evaluate():
        strategy = next(s for s in space.strategies if s.strategy == point["strategy"])
        fixed = {
            strategy.optuna_name(n) for n, d in strategy.params.items() if isinstance(d, Fixed)
        }
        points.append({k: v for k, v in point.items() if k not in fixed})
    return points


# -- optuna-hyperband -------------------------------------------------------------


def optuna_hyperband(
    config: ExperimentConfig, log: EpochLog, root: Path, threads: int
) -> PeerOutcome:
    """Optuna's TPE with its Hyperband pruner, the recipes enqueued first."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    space = config.search_space()
    runner = _Runner(config, log, threads)
    seed = config.search.seed
    study = optuna.create_study(
        # Hyperband picks a trial's bracket from a hash of the study name and the
        # trial's number: a fixed name makes the search repeat.
        study_name=f"optuna-hyperband-s{seed}",
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.HyperbandPruner(
            min_resource=GRACE_EPOCHS,
            max_resource=max_epochs(config, space),
            reduction_factor=REDUCTION_FACTOR,
        ),
    )
    for point in _enqueued(space):
        study.enqueue_trial(point)

    def objective(trial: optuna.Trial) -> float:
        fixed = space.define_by_run(trial)
        last: dict[str, Any] = {}

        def on_epoch(metrics: dict[str, Any]) -> None:
            last.update(metrics)
            trial.report(float(metrics["target_score"]), int(metrics["epoch"]))
            if trial.should_prune():
                raise optuna.TrialPruned

        try:
            metrics, _ = runner.train(
                str(trial.number), _from_optuna(trial.params, fixed), on_epoch
            )
        except BudgetSpent:
            study.stop()
            # The budget's last epoch is this trial's (one trial at a time), and may be
            # its first, before ``on_epoch`` has seen it.
            return float(log.epochs()[-1][2]["target_score"])
        return float(metrics["target_score"])

    # A diverged run fails its trial, as in phasetune's search, and the search goes on.
    study.optimize(objective, n_trials=None, catch=(FloatingPointError,))
    return PeerOutcome(
        best=log.best(),
        trials=len(study.trials),
        wall_seconds=time.perf_counter() - started,
    )


# -- tune-optuna-asha ------------------------------------------------------------------


def _tune_trial(
    config: dict[str, Any],
    *,
    experiment: dict[str, Any],
    log_path: str,
    budget: int,
    threads: int,
) -> None:
    from ray import tune

    experiment_config = ExperimentConfig.model_validate(experiment)
    log = EpochLog(Path(log_path), budget, target_metrics(experiment_config))
    runner = _Runner(experiment_config, log, threads)
    trial = tune.get_context().get_trial_name()
    try:
        runner.train(trial, config, on_epoch=lambda metrics: tune.report(_reported(metrics)))
    except BudgetSpent:
        # The stopper ends the search. Tune refuses a trial that ends without the
        # scheduler's metric, as one started just before the budget ran out would.
        if runner.last is not None:
            tune.report(_reported(runner.last))


def _reported(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def tune_optuna_asha(
    config: ExperimentConfig, log: EpochLog, root: Path, threads: int
) -> PeerOutcome:
    """Tune's OptunaSearch and ASHAScheduler, the recipes as points_to_evaluate."""
    from ray import cloudpickle, tune
    from ray.tune.logger import JsonLoggerCallback
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    # Tune's workers cannot import this file (benchmarks/ is not a package): its trial
    # function and log travel by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    started = time.perf_counter()
    space = config.search_space()
    concurrent = max(1, int((os.cpu_count() or 1) // config.resources.cpus_per_worker))

    class _BudgetStopper(tune.Stopper):
        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            return False

        def stop_all(self) -> bool:
            return log.spent() >= log.budget

    trainable = tune.with_resources(
        tune.with_parameters(
            _tune_trial,
            experiment=config.model_dump(mode="json"),
            log_path=str(log.path),
            budget=log.budget,
            threads=threads,
        ),
        {"cpu": config.resources.cpus_per_worker},
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(
                space=space.define_by_run,
                metric="target_score",
                mode="max",
                points_to_evaluate=_enqueued(space),
                seed=config.search.seed,
            ),
            scheduler=ASHAScheduler(
                metric="target_score",
                mode="max",
                time_attr="training_iteration",
                max_t=max_epochs(config, space),
                grace_period=GRACE_EPOCHS,
                reduction_factor=REDUCTION_FACTOR,
            ),
            # Enough that the budget, not the count, ends the search.
            num_samples=10_000,
            max_concurrent_trials=concurrent,
        ),
        run_config=tune.RunConfig(
            name="tune-optuna-asha",
            storage_path=str(root),
            stop=_BudgetStopper(),
            # Tune's own result files, which a Ray user gets by default (phasetune's
            # search writes its own and switches Tune's off for the whole process).
            callbacks=[JsonLoggerCallback()],
            verbose=0,
        ),
    )
    # A trial the budget's stop ends before its first report has no results; Tune warns
    # of each, which says nothing here.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    results = tuner.fit()
    return PeerOutcome(
        best=log.best(),
        trials=len(results),
        wall_seconds=time.perf_counter() - started,
    )


# -- neps-priorband -------------------------------------------------------------------


#: Between a strategy's name and its parameter's in NePS's flat space.
_SEP = "__"


def _neps_param(domain: Any, prior: Any) -> Any:
    """One searched phasetune domain as a NePS parameter, with ``prior`` (None: none).
    A categorical's choices are their indices: NePS's classic space keeps a set of the
    choices, whose order for strings changes from one process to the next."""
    import neps

    with_prior = {} if prior is None else {"prior_confidence": "medium"}
    if isinstance(domain, Categorical):
        if prior is not None:
            with_prior["prior"] = domain.choices.index(prior)
        return neps.Categorical(tuple(range(len(domain.choices))), **with_prior)
    if isinstance(domain, IntRange):
        if prior is not None:
            with_prior["prior"] = int(prior)
        return neps.Integer(domain.low, domain.high, log=domain.log, **with_prior)
    if isinstance(domain, FloatRange):
        if prior is not None:
            with_prior["prior"] = float(prior)
        return neps.Float(domain.low, domain.high, log=domain.log, **with_prior)
    raise TypeError(f"not a searched domain: {domain!r}")


def _statically_active(space: StrategySpace, name: str) -> bool:
    """False where a fixed parameter switches ``name`` off for every trial. A parameter
    switched by a searched one is always sampled (NePS has no conditions) and dropped
    from the plan's parameters where it is off."""
    when = space.conditions.get(name)
    if when is None:
        return True
    gate = space.params[when.param]
    if isinstance(gate, Fixed):
        return gate.value in when.values and _statically_active(space, when.param)
    return _statically_active(space, when.param)


def _searched(space: StrategySpace) -> dict[str, Any]:
    """The strategy's parameters NePS samples: neither fixed nor switched off by one."""
    return {
        name: domain
        for name, domain in space.params.items()
        if not isinstance(domain, Fixed) and _statically_active(space, name)
    }


def neps_space(space: SearchSpace, min_epochs: int, max_epochs: int) -> Any:
    """phasetune's space as a flat NePS PipelineSpace: the strategy (by index), every
    strategy's searched parameters as ``<strategy>__<name>``, and epochs as an integer
    fidelity. Flat, NePS runs its classic PriorBand, which samples around each prior;
    its PriorBand for spaces with ``Operation`` branches (NePS 0.17) samples the prior
    configuration itself every time. Each parameter's prior is its strategy's first
    documented recipe (medium confidence); the strategy's, the first strategy with a
    recipe (low confidence)."""
    import neps

    strategies = tuple(space.strategies)
    with_recipe = next((i for i, s in enumerate(strategies) if s.baselines), None)
    prior = {} if with_recipe is None else {"prior": with_recipe, "prior_confidence": "low"}
    attributes: dict[str, Any] = {
        "strategy": neps.Categorical(tuple(range(len(strategies))), **prior)
    }
    for strategy in strategies:
        recipe = strategy.baselines[0].params if strategy.baselines else {}
        for name, domain in _searched(strategy).items():
            attributes[f"{strategy.strategy}{_SEP}{name}"] = _neps_param(domain, recipe.get(name))
    attributes["epochs"] = neps.IntegerFidelity(min_epochs, max_epochs)
    # NePS pickles the space; a class made with type() would not unpickle, so the
    # space is a module-level class whose attributes are set here.
    space_class = type("PriorBandSpace", (neps.PipelineSpace,), attributes)
    space_class.__module__ = __name__
    globals()["PriorBandSpace"] = space_class
    return space_class()


def _from_neps(space: SearchSpace, config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial config from NePS's flat one: the chosen strategy's parameters, each
    categorical's choice by its index, the fixed ones, less those switched off."""
    strategy = space.strategies[int(config["strategy"])]
    values: dict[str, Any] = {
        name: domain.value for name, domain in strategy.params.items() if isinstance(domain, Fixed)
    }
    for name, domain in _searched(strategy).items():
        value = config[f"{strategy.strategy}{_SEP}{name}"]
        values[name] = domain.choices[int(value)] if isinstance(domain, Categorical) else value
    active = strategy.active(values)
    return _point(strategy.strategy, {k: v for k, v in values.items() if k in active})


def neps_priorband(
    config: ExperimentConfig, log: EpochLog, root: Path, threads: int
) -> PeerOutcome:
    """NePS PriorBand over epochs, the documents' recipes as priors."""
    import neps

    for name in ("neps", "neps.api", "neps.runtime", "neps.state"):
        logging.getLogger(name).setLevel(logging.ERROR)
    started = time.perf_counter()
    space = config.search_space()
    runner = _Runner(config, log, threads)
    seed = config.search.seed
    trials = 0

    def evaluate(
        pipeline_directory: Path, previous_pipeline_directory: Path | None, **config: Any
    ) -> dict[str, Any]:
        nonlocal trials
        trials += 1
        point = _from_neps(space, config)
        epochs = int(config["epochs"])
        checkpoint = Path(pipeline_directory) / CHECKPOINT_FILE
        earlier = (
            Path(previous_pipeline_directory) / CHECKPOINT_FILE
            if previous_pipeline_directory
            else None
        )
        try:
            metrics, trained = runner.train(
                # A promotion continues the same configuration: one trial.
                re.sub(r"_rung_\d+$", "", Path(pipeline_directory).name),
                point,
                until=epochs,
                resume_from=earlier,
                save_to=checkpoint,
            )
        except BudgetSpent:
            metrics, trained = log.epochs()[-1][2], 1
        except FloatingPointError:
            # A diverged run: NePS would stop the whole search on the error (or, told to
            # ignore errors, loop on a bug), so it scores as nothing learnt.
            metrics, trained = {"target_score": 0.0}, runner.trained
        return {
            "objective_to_minimize": -float(metrics["target_score"]),
            "cost": trained,
            "info_dict": {"point": point},
        }

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    neps.run(
        evaluate,
        neps_space(space, GRACE_EPOCHS, max_epochs(config, space)),
        root_directory=str(root / "neps-priorband"),
        overwrite_root_directory=True,
        total_cost_to_spend=log.budget,
        # The documents' recipe first, as the other searches start with the recipes.
        optimizer=("priorband", {"sample_prior_first": True, "eta": 3}),
    )
    return PeerOutcome(
        best=log.best(),
        trials=trials,
        wall_seconds=time.perf_counter() - started,
    )


#: Peer name -> (its search, the package it needs).
PEERS: dict[str, tuple[Callable[[ExperimentConfig, EpochLog, Path, int], PeerOutcome], str]] = {
    "optuna-hyperband": (optuna_hyperband, "optuna"),
    "tune-optuna-asha": (tune_optuna_asha, "ray"),
    "neps-priorband": (neps_priorband, "neps"),
}


def missing_package(peer: str) -> str | None:
    """One line saying how to install ``peer``'s package, or None where it imports."""
    package = PEERS[peer][1]
    try:
        __import__(package)
    except Exception as error:  # noqa: BLE001 - any import failure reads the same
        return (
            f"{peer}: its package {package!r} does not import here ({error.__class__.__name__});"
            " install it in an environment of its own (docs/benchmarks.md, search_efficiency.py)"
        )
    return None
