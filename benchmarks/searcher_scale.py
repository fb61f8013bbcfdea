"""Searcher and scheduler cost per trial at scale, with trials that cost nothing.

phasetune's real searcher (``StudySearch`` over the quickstart's define-by-run space,
the documents' baselines first, seeded TPE, a SQLite study) and its ASHA scheduler
drive a dummy Tune trainable that reports a few epochs of made-up metrics at once.
The same search with SQLite's rollback journal instead of its write-ahead log (as on
a network disk), with Optuna's own ``TPESampler`` (it suggests the same trials as the
search's ``IncrementalTPESampler``), with a journal file, with the random sampler, with
Ray's plain ``OptunaSearch`` on an in-memory study, and with Tune's
``BasicVariantGenerator`` (random, no Optuna) shows what each part adds to Tune's own
cost per trial. Printed per searcher and size: ms per trial (wall / trials), its ratio
to the random generator, the ms per trial spent inside the searcher (suggest, results,
completion) and inside the scheduler (ASHA's calls), the rest being Tune's. By default
only the search and the generator run (a few minutes); ``--searchers all`` runs every
one.

    python benchmarks/searcher_scale.py                      # 100 and 1,000 trials
    python benchmarks/searcher_scale.py --searchers all      # every searcher
    python benchmarks/searcher_scale.py --trials 300 --concurrency 16
    python benchmarks/searcher_scale.py --tiny               # 20 trials (smoke test)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

from ray import tune
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from search.config import ExperimentConfig, load_experiment
from search.experiment import _result_loggers
from search.ray_runtime import ray_running
from search.schedulers import build_scheduler
from search.searcher import build_searcher, max_epochs
from spaces import SearchSpace

#: Epochs each dummy trial reports: past ASHA's first rung (grace_period 2), so the
#: scheduler stops some trials and the study sees pruned trials as well as finished ones.
EPOCHS = 4

#: The searchers compared, in the order printed.
SEARCHERS = (
    "phasetune",
    "phasetune_rollback",
    "phasetune_optuna_tpe",
    "phasetune_journal",
    "phasetune_random",
    "optuna_memory",
    "random",
)

DESCRIPTIONS = {
    "phasetune": "StudySearch, TPE, SQLite (the real search; WAL on a local disk)",
    "phasetune_rollback": "the same, SQLite's rollback journal (as on a network disk)",
    "phasetune_optuna_tpe": "the same, Optuna's TPESampler (same arguments, same trials)",
    "phasetune_journal": "the same, an Optuna journal file instead of SQLite",
    "phasetune_random": "StudySearch, random sampler, SQLite",
    "optuna_memory": "Ray's OptunaSearch, TPE, in-memory study",
    "random": "Tune's BasicVariantGenerator, no Optuna",
}


def fake_score(config: dict[str, Any]) -> float:
    """A made-up target_score with one optimum (lr 1e-3), so TPE has something to model."""
    params = config.get(config["strategy"], config)
    lr = params.get("base_lr", params.get("lr", 1e-3))
    return math.exp(-((math.log10(lr) + 3) ** 2))


def dummy_trial(config: dict[str, Any]) -> None:
    """Tune function trainable: reports ``EPOCHS`` epochs at once, as the real driver does."""
    score = fake_score(config)
    for epoch in range(1, EPOCHS + 1):
        tune.report(
            {
                "target_score": score * epoch / EPOCHS,
                "epoch": epoch,
                "plan_progress": epoch / EPOCHS,
                "plan_complete": int(epoch == EPOCHS),
            }
        )


class DummyTrainable(tune.Trainable):
    """The same trial as a class trainable (one ``step`` per epoch, resettable for reuse)."""

    def setup(self, config: dict[str, Any]) -> None:
        self.score = fake_score(config)
        self.epoch = 0

    def step(self) -> dict[str, Any]:
        self.epoch += 1
        return {
            "target_score": self.score * self.epoch / EPOCHS,
            "epoch": self.epoch,
            "plan_progress": self.epoch / EPOCHS,
            "plan_complete": int(self.epoch == EPOCHS),
            "done": self.epoch == EPOCHS,
        }

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        self.setup(new_config)
        return True


class ClockedLimiter(ConcurrencyLimiter):
    """Tune's own concurrency limit around a searcher, also timing the searcher's calls."""

    def __init__(self, searcher: Searcher, max_concurrent: int) -> None:
        super().__init__(searcher, max_concurrent=max_concurrent)
        self.seconds = {"suggest": 0.0, "result": 0.0, "complete": 0.0}

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        started = time.perf_counter()
        try:
            return super().suggest(trial_id)
        finally:
            self.seconds["suggest"] += time.perf_counter() - started

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        started = time.perf_counter()
        super().on_trial_result(trial_id, result)
        self.seconds["result"] += time.perf_counter() - started

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        started = time.perf_counter()
        super().on_trial_complete(trial_id, result=result, error=error)
        self.seconds["complete"] += time.perf_counter() - started


#: Tune's calls into a scheduler.
SCHEDULER_CALLS = (
    "on_trial_add",
    "on_trial_result",
    "on_trial_complete",
    "on_trial_remove",
    "on_trial_error",
    "choose_trial_to_run",
)


def clock_scheduler(scheduler: Any) -> dict[str, float]:
    """Time every call Tune makes into ``scheduler`` (its methods are wrapped in place);
    the seconds add up under "scheduler" in the dict returned."""
    seconds = {"scheduler": 0.0}

    def timed(method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                seconds["scheduler"] += time.perf_counter() - started

        return call

    for name in SCHEDULER_CALLS:
        setattr(scheduler, name, timed(getattr(scheduler, name)))
    return seconds


@dataclasses.dataclass(frozen=True)
class Row:
    """One search of ``trials`` trials with one searcher."""

    searcher: str
    trials: int
    concurrency: int
    wall_s: float
    searcher_s: dict[str, float] | None
    scheduler_s: float
    stopped_early: int

    @property
    def ms_per_trial(self) -> float:
        return 1000 * self.wall_s / self.trials

    def searcher_ms_per_trial(self) -> float | None:
        if self.searcher_s is None:
            return None
        return 1000 * sum(self.searcher_s.values()) / self.trials

    @property
    def scheduler_ms_per_trial(self) -> float:
        return 1000 * self.scheduler_s / self.trials


def _search_alg(
    name: str, config: ExperimentConfig, space: SearchSpace, root: str, concurrency: int
) -> tuple[Any, dict[str, Any] | None]:
    """The search algorithm ``name``, limited to ``concurrency`` running trials, and for
    the random generator its Tune space."""
    import optuna

    if name == "random":
        space_names = [strategy.strategy for strategy in space.strategies]
        param_space = {
            "strategy": tune.choice(space_names),
            "lr": tune.loguniform(1e-5, 1e-2),
            "epochs": tune.randint(1, 41),
            "dropout": tune.uniform(0.0, 0.5),
        }
        return (
            BasicVariantGenerator(max_concurrent=concurrency, random_state=config.search.seed),
            param_space,
        )
    if name == "optuna_memory":
        return (
            OptunaSearch(
                space=space.define_by_run,
                metric="target_score",
                mode="max",
                points_to_evaluate=space.points_to_evaluate(),
                sampler=optuna.samplers.TPESampler(seed=config.search.seed),
            ),
            None,
        )
    sampler = "random" if name == "phasetune_random" else "tpe"
    search = config.search.model_copy(update={"sampler": sampler})
    study = f"{root}/study.journal" if name == "phasetune_journal" else f"sqlite:///{root}/study.db"
    config = config.model_copy(update={"search": search})
    if name == "phasetune_rollback":
        # What rdb_storage picks where it cannot tell the disk is local.
        with mock.patch("search.study._sqlite.on_local_disk", return_value=False):
            return build_searcher(config, space, study), None
    if name == "phasetune_optuna_tpe":
        # Suggests the same trials as the search's IncrementalTPESampler, at Optuna's cost.
        with mock.patch("search.searcher.IncrementalTPESampler", optuna.samplers.TPESampler):
            return build_searcher(config, space, study), None
    return build_searcher(config, space, study), None


def _send_by_value() -> None:
    """Ray workers cannot import this script by its module name (benchmarks/ is no
    package), so its trainables travel by value."""
    from ray import cloudpickle

    if __name__ != "__main__" and __name__ in sys.modules:
        cloudpickle.register_pickle_by_value(sys.modules[__name__])


def run_one(
    name: str,
    trials: int,
    *,
    concurrency: int,
    cpus_per_trial: float,
    trainable: str = "function",
    reuse_actors: bool = True,
) -> Row:
    """One search of ``trials`` dummy trials with searcher ``name`` (Ray must be up)."""
    _send_by_value()
    base = load_experiment(None)
    config = base.model_copy(
        update={"search": base.search.model_copy(update={"num_samples": trials})}
    )
    space = config.search_space()
    dummy = dummy_trial if trainable == "function" else DummyTrainable
    with tempfile.TemporaryDirectory(prefix="phasetune-scale-") as root:
        started = time.perf_counter()
        search_alg, param_space = _search_alg(name, config, space, root, concurrency)
        if isinstance(search_alg, Searcher):
            search_alg = ClockedLimiter(search_alg, max_concurrent=concurrency)
        scheduler = build_scheduler(config.search, max_epochs(config, space))
        scheduler_seconds = clock_scheduler(scheduler)
        tuner = tune.Tuner(
            tune.with_resources(dummy, {"cpu": cpus_per_trial}),
            param_space=param_space,
            tune_config=tune.TuneConfig(
                search_alg=search_alg,
                scheduler=scheduler,
                num_samples=trials,
                reuse_actors=reuse_actors,
            ),
            # The real search's result files (its own TensorBoard writer is the trial's).
            run_config=tune.RunConfig(
                name="scale",
                storage_path=root,
                callbacks=_result_loggers(),
                # The dummies keep no state worth saving; a class trainable would
                # otherwise be asked for a checkpoint when it finishes.
                checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False),
                verbose=0,
            ),
        )
        results = tuner.fit()
        wall = time.perf_counter() - started
    errors = [result for result in results if result.error is not None]
    if errors or len(results) != trials:
        raise RuntimeError(f"{name}: {len(errors)} of {len(results)} trials failed")
    return Row(
        searcher=name,
        trials=trials,
        concurrency=concurrency,
        wall_s=wall,
        searcher_s=dict(search_alg.seconds) if isinstance(search_alg, ClockedLimiter) else None,
        scheduler_s=scheduler_seconds["scheduler"],
        stopped_early=sum(1 for result in results if result.metrics["epoch"] < EPOCHS),
    )


def run(
    trials: Sequence[int] = (100, 1000),
    searchers: Sequence[str] = SEARCHERS,
    *,
    concurrency: int | None = None,
    cpus_per_trial: float = 1.0,
    trainable: str = "function",
    reuse_actors: bool = True,
) -> list[Row]:
    """Every searcher at every size, on the Ray already running or one started here.

    ``concurrency`` None runs as many trials at once as the CPUs hold, as phasetune's
    search does by default.
    """
    import ray

    from search.ray_runtime import configure_runtime

    configure_runtime()
    rows = []
    with ray_running():
        limit = concurrency or max(1, int(ray.cluster_resources()["CPU"] // cpus_per_trial))
        for size in trials:
            for name in searchers:
                rows.append(
                    run_one(
                        name,
                        size,
                        concurrency=limit,
                        cpus_per_trial=cpus_per_trial,
                        trainable=trainable,
                        reuse_actors=reuse_actors,
                    )
                )
    return rows


def format_table(rows: Sequence[Row]) -> str:
    """Rows as a text table; ratios are to the random generator at the same size."""
    reference = {row.trials: row.ms_per_trial for row in rows if row.searcher == "random"}
    lines = [
        f"{'searcher':<17} {'trials':>6} {'wall s':>7} {'ms/trial':>9} {'vs random':>9}"
        f" {'in searcher':>11} {'suggest':>8} {'result':>7} {'complete':>8}"
        f" {'scheduler':>9} {'stopped':>7}"
    ]
    for row in rows:
        ratio = row.ms_per_trial / reference[row.trials] if row.trials in reference else None
        spent = row.searcher_ms_per_trial()
        parts = (
            {key: 1000 * value / row.trials for key, value in row.searcher_s.items()}
            if row.searcher_s
            else {}
        )
        lines.append(
            f"{row.searcher:<17} {row.trials:>6} {row.wall_s:>7.1f} {row.ms_per_trial:>9.1f}"
            f" {_fmt(ratio, 8, 2, 'x')} {_fmt(spent, 11, 1)} {_fmt(parts.get('suggest'), 8, 1)}"
            f" {_fmt(parts.get('result'), 7, 1)} {_fmt(parts.get('complete'), 8, 1)}"
            f" {row.scheduler_ms_per_trial:>9.1f} {row.stopped_early:>7}"
        )
    return "\n".join(lines)


def _fmt(value: float | None, width: int, digits: int, suffix: str = "") -> str:
    if value is None:
        return f"{'-':>{width + len(suffix)}}"
    return f"{value:>{width}.{digits}f}{suffix}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[100, 1000])
    parser.add_argument(
        "--searchers",
        nargs="+",
        choices=(*SEARCHERS, "all"),
        default=["phasetune", "random"],
        help="which to run (all: every one)",
    )
    parser.add_argument(
        "--concurrency", type=int, help="max_concurrent_trials (default: CPUs / CPUs per trial)"
    )
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--trainable", choices=("function", "class"), default="function")
    parser.add_argument(
        "--no-reuse-actors", dest="reuse_actors", action="store_false", help="a new actor per trial"
    )
    parser.add_argument("--tiny", action="store_true", help="20 trials only (smoke test)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    searchers = list(SEARCHERS) if "all" in args.searchers else args.searchers
    rows = run(
        [20] if args.tiny else args.trials,
        searchers,
        concurrency=args.concurrency,
        cpus_per_trial=args.cpus_per_trial,
        trainable=args.trainable,
        reuse_actors=args.reuse_actors,
    )
    print(
        f"dummy {args.trainable} trainable, {EPOCHS} epochs, ASHA; max_concurrent_trials"
        f" {rows[0].concurrency}, {args.cpus_per_trial:g} CPU per trial,"
        f" reuse_actors={args.reuse_actors}"
    )
    for name in searchers:
        print(f"  {name:<17} {DESCRIPTIONS[name]}")
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(row) for row in rows], indent=2) + "\n")


if __name__ == "__main__":
    main()
