"""Search efficiency: epochs to each target, phasetune's search against the searches a
user would pick instead.

The searches, over an experiment's space (``--experiment quickstart``: progressive vs
single_phase on the synthetic signs; ``multitask``: joint vs sequential on the synthetic
scenes), with the same data, seed and documented recipes:

- ``phasetune``: what ``phasetune run`` does: the documents' recipes first, then
  Optuna's TPE, with phasetune's early stopping (``--scheduler``: strategy_asha, as
  the quickstart, or asha, or phase_asha); ``--trials`` trials;
- the peers (``search_peers.py``), each with phasetune's epochs for the seed as its
  budget: ``optuna-hyperband`` (Optuna alone: TPE, HyperbandPruner, the recipes
  enqueued), ``tune-optuna-asha`` (Tune's OptunaSearch and ASHAScheduler, the recipes
  as points_to_evaluate) and ``neps-priorband`` (NePS PriorBand, the recipes as its
  priors). optuna-hyperband and neps-priorband run one trial at a time (in this
  process), tune-optuna-asha as many as phasetune; every peer's trial trains with a
  phasetune trial's torch threads, so the same configuration trains alike in each;
- ``tpe+strategy_asha``: phasetune's search without the recipes; ``random+fifo``: random
  search, every trial runs its whole plan; ``tpe+fifo``: TPE alone, every trial runs its
  whole plan (``--variants all``: these and phasetune);
- ``phasetune+independent-tpe``: phasetune's search with ``search.multivariate: false``
  (TPE models each parameter on its own, as the peers' TPE does); run it alone and
  ``--combine`` its runs with the peers' to compare it with them;
- ``phasetune+random-fraction``: phasetune's search with ``search.random_fraction:
  0.33`` (after TPE's start-up, a third of the trials drawn at random, as BOHB does);
  run and compare it as the one above;
- ``phasetune+one-at-a-time``: phasetune's search with ``search.max_concurrent_trials:
  1``, so its epochs are counted as the in-process peers' are (no concurrent trial's
  epochs spent before a hit); run and compare it as the ones above.

The quickstart's target is ``val/acc >= --target`` (default 0.75), and the further
thresholds ``--harder`` (default 0.80, 0.84 and the quickstart's own 0.85) are measured
from the same searches; the searches optimise ``target_score`` against the target. The
multi-task example's thresholds are its targets, all at once and each alone.

Definitions, per search. Each epoch is placed on one clock, in the order it was trained:
phasetune's from Tune's ``result.json`` (a trial's start, from its whole-second
``timestamp`` minus ``time_total_s`` narrowed over all its reports, plus that epoch's
``time_total_s``); a peer's from its own log of every epoch it trained, written as
each ends (a peer's own accounting is not used: NePS counts fidelity, not epochs, and
checks its budget only before an evaluation).

- *epochs to target*: every epoch trained, by all trials, in that order, up to and
  including the first that meets the threshold; concurrent trials' epochs count as
  spent, and so do a peer's epochs that retrain a configuration. "not reached" when no
  epoch meets it (then *epochs* is the budget spent).
- *wall to target*: from the first trial's start to that epoch.
- *best score*, *best acc*: the top-ranked trial's final ``target_score`` and ``val/acc``
  (a peer's trials ranked as phasetune ranks, by their last epoch).
- *epochs*, *wall s*: all epochs the search ran; the search's wall time (data and the
  pretrained backbone are prepared before the clock starts).
- *vs random* (where random search ran): epochs to target over random search's with the
  same seed; ``<=`` when random search did not reach it (its budget is used), ``>=``
  when this one did not. The summary gives the geometric mean over seeds where both
  reached it and an upper bound over every seed where this search reached it.
- *phasetune against each peer*: phasetune's epochs to each threshold over the peer's,
  per seed and as the geometric mean where both met it (``<=``: only phasetune met it,
  bounded by the peer's budget). The goal: no more epochs than any peer at every
  threshold where both meet it, and a best recipe at least as good.

By default phasetune and every peer whose package imports run, one seed, 30 trials
(23-32 minutes a seed on 2 idle cores). The table over 5 seeds, seed by seed so that
each run's numbers are kept, then printed together:

    python benchmarks/search_efficiency.py                          # seed 0, 30 trials
    for seed in 0 1 2 3 4; do python benchmarks/search_efficiency.py --first-seed $seed \
        --json s$seed.json; done
    python benchmarks/search_efficiency.py --combine s0.json s1.json s2.json s3.json s4.json
    python benchmarks/search_efficiency.py --experiment multitask --trials 20 --seeds 5
    python benchmarks/search_efficiency.py --variants all --trials 12 --seeds 2
    python benchmarks/search_efficiency.py --variants phasetune --random-from \
        benchmarks/results/random_search_50_trials_seeds_0-3.json --seeds 4

NePS installs beside torchvision, not in an environment with the CPU-only torch
(docs/benchmarks.md): ``pip install -c pins.txt -c constraints-torchvision.txt -e
".[torchvision,peers]"``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from pydantic import ValidationError
from search_peers import PEERS, EpochLog, missing_package, target_metrics

from search.config import ExperimentConfig, SearchConfig, load_experiment
from search.experiment import run_search
from search.ray_runtime import ray_running
from trainables.data import load_dataset
from trainables.launch import torch_threads
from trainables.models import ensure_pretrained

RANDOM = "random+fifo"
GOAL = 0.5


PHASETUNE = "phasetune"
#: phasetune's search with TPE modelling each parameter on its own, as the peers' TPE
#: does (Optuna's default), instead of each strategy's parameters jointly.
INDEPENDENT = "phasetune+independent-tpe"
#: phasetune's search with a share of the trials after TPE's start-up drawn at random:
#: BOHB's third.
RANDOM_FRACTION = "phasetune+random-fraction"
#: phasetune's search one trial at a time, as optuna-hyperband and neps-priorband run:
#: epochs to a target then count no concurrent trial's epochs.
ONE_AT_A_TIME = "phasetune+one-at-a-time"
#: phasetune's search with one setting changed: run only when named, and compared with
#: each peer as phasetune is.
ONE_SETTING_CHANGED = (INDEPENDENT, RANDOM_FRACTION, ONE_AT_A_TIME)


class _Search(NamedTuple):
    sampler: str
    scheduler: str
    baselines_first: bool
    multivariate: bool = True
    random_fraction: float = 0.0
    max_concurrent_trials: int | None = None


def _variants(scheduler: str) -> dict[str, _Search]:
    return {
        PHASETUNE: _Search("tpe", scheduler, True),
        f"tpe+{scheduler}": _Search("tpe", scheduler, False),
        RANDOM: _Search("random", "fifo", False),
        "tpe+fifo": _Search("tpe", "fifo", False),
        INDEPENDENT: _Search("tpe", scheduler, True, multivariate=False),
        RANDOM_FRACTION: _Search("tpe", scheduler, True, random_fraction=0.33),
        ONE_AT_A_TIME: _Search("tpe", scheduler, True, max_concurrent_trials=1),
    }


def _default_variants(scheduler: str) -> tuple[str, ...]:
    """What ``--variants all`` (and ``run``'s None) runs: the four Ray searches; the
    variants with one setting changed run only when named."""
    return tuple(name for name in _variants(scheduler) if name not in ONE_SETTING_CHANGED)


def _config(
    base: dict[str, Any],
    name: str,
    variant: _Search,
    seed: int,
    root: str,
) -> ExperimentConfig:
    raw = json.loads(json.dumps(base))
    raw["name"] = name
    raw["search"].update(
        sampler=variant.sampler,
        scheduler=variant.scheduler,
        seed=seed,
        evaluate_baselines=variant.baselines_first,
        multivariate=variant.multivariate,
        random_fraction=variant.random_fraction,
        max_concurrent_trials=variant.max_concurrent_trials,
    )
    raw["storage"] = {"path": root}
    return ExperimentConfig.model_validate(raw)


def _reports(experiment_dir: Path) -> list[tuple[float, int, dict[str, Any]]]:
    """Every reported epoch as (seconds since the first trial started, trial's start
    order from 1, its metrics), in report order."""
    trials = []
    for result_file in sorted((experiment_dir / "tune").glob("*/result.json")):
        results = [json.loads(line) for line in result_file.read_text().splitlines() if line]
        if not results:
            continue
        # ``timestamp`` is whole seconds, so each report bounds the start to one second;
        # together they pin it much closer.
        earliest = max(r["timestamp"] - r["time_total_s"] for r in results)
        latest = min(r["timestamp"] + 1 - r["time_total_s"] for r in results)
        trials.append(((earliest + latest) / 2, results))
    trials.sort(key=lambda trial: trial[0])
    first = trials[0][0] if trials else 0.0
    reports = [
        (start + r["time_total_s"] - first, order, r)
        for order, (start, results) in enumerate(trials, start=1)
        for r in results
    ]
    return sorted(reports, key=lambda report: report[:2])


def _machine() -> str:
    """What decides how a configuration trains here besides its seed and threads:
    torch's build and the CPU kernels it picks. Where these differ, the same trial
    trains to other numbers, so rows from such runs compare as seeds, not trial by
    trial (seed 4's first ten trials matched in 0 of 10 between an AVX2 machine and an
    earlier run's)."""
    return f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}"


def _met(metrics: Mapping[str, Any], threshold: Mapping[str, float]) -> bool:
    return all(metrics.get(name, -math.inf) >= value for name, value in threshold.items())


def _to_target(
    reports: list[tuple[float, int, Mapping[str, Any]]], threshold: Mapping[str, float]
) -> dict[str, Any]:
    """Epochs up to and including the first that meets every bound of ``threshold``
    (metric -> value), its time and trial."""
    for spent, (at, order, metrics) in enumerate(reports, start=1):
        if _met(metrics, threshold):
            return {"epochs_to_target": spent, "wall_to_target_s": at, "hit_trial": order}
    return {"epochs_to_target": None, "wall_to_target_s": None, "hit_trial": None}


def _ratio(
    mine: dict[str, Any], theirs: dict[str, Any], epochs: int, random_epochs: int
) -> tuple[str, float | None]:
    """(bound, value) of epochs to a threshold vs random search's: bound is ``=``,
    ``<=``, ``>=``, or ``-`` when neither reached it."""
    mine, theirs = mine["epochs_to_target"], theirs["epochs_to_target"]
    if mine is not None and theirs is not None:
        return "=", mine / theirs
    if mine is not None:
        return "<=", mine / random_epochs
    if theirs is not None:
        return ">=", epochs / theirs
    return "-", None


def _geo_mean(values: list[float]) -> float | None:
    return math.exp(statistics.fmean(math.log(v) for v in values)) if values else None


def _geo_mean_vs_random(hits: list[dict[str, Any]]) -> dict[str, Any]:
    """Epochs to a threshold over the seeds, against random search's.

    ``vs_random`` is the geometric mean where both met it. ``vs_random_at_most`` bounds
    it from above over every seed where this search met it: where random search never
    did, its epochs to the threshold exceed its budget, so the ``<=`` ratio bounds that
    seed's. A seed where only random search met it (``>=``) would need a bound the
    other way, so then there is none; seeds where neither did are left out.
    """
    reached = [hit for hit in hits if hit["epochs_to_target"] is not None]
    exact = [hit["vs_random"] for hit in hits if hit["vs_random_bound"] == "="]
    bounded = [hit["vs_random"] for hit in hits if hit["vs_random_bound"] in ("=", "<=")]
    only_random = sum(hit["vs_random_bound"] == ">=" for hit in hits)
    at_most = _geo_mean(bounded) if not only_random and len(bounded) > len(exact) else None
    return {
        "reached": len(reached),
        "median_epochs_to_target": statistics.median(h["epochs_to_target"] for h in reached)
        if reached
        else None,
        "median_wall_to_target_s": statistics.median(h["wall_to_target_s"] for h in reached)
        if reached
        else None,
        "vs_random": _geo_mean(exact),
        "vs_random_seeds": len(exact),
        "vs_random_at_most": at_most,
        "vs_random_at_most_seeds": len(bounded) if at_most is not None else 0,
        "only_random_seeds": only_random,
    }


def _summary(rows: list[dict[str, Any]], variant: str) -> dict[str, Any]:
    mine = [row for row in rows if row["variant"] == variant]
    compared = all("vs_random_bound" in row for row in mine)

    def over(hits: list[dict[str, Any]]) -> dict[str, Any]:
        if compared:
            return _geo_mean_vs_random(hits)
        reached = [hit["epochs_to_target"] for hit in hits if hit["epochs_to_target"] is not None]
        return {
            "reached": len(reached),
            "median_epochs_to_target": statistics.median(reached) if reached else None,
        }

    return {
        "seeds": len(mine),
        **over(mine),
        "mean_best_target_score": statistics.fmean(r["best_target_score"] for r in mine),
        "mean_epochs": statistics.fmean(r["epochs"] for r in mine),
        "mean_wall_s": statistics.fmean(r["wall_s"] for r in mine),
        # Each further threshold, from the same searches.
        "harder": {
            threshold: over([row["harder"][threshold] for row in mine])
            for threshold in (mine[0]["harder"] if mine else {})
        },
    }


#: What must match for random search's rows of one run to stand in another's.
COMPARABLE = ("trials", "epoch_scale", "samples", "target", "tiny")


def _comparable(
    trials: int, epoch_scale: float, samples: int, target: float, tiny: bool
) -> dict[str, Any]:
    return dict(zip(COMPARABLE, (trials, epoch_scale, samples, target, tiny), strict=True))


class EarlierRunError(ValueError):
    """An earlier run's ``--json`` that cannot stand in for a search of this run."""


def random_rows_from(
    path: Path, settings: dict[str, Any], seeds: range, harder: tuple[float, ...]
) -> dict[int, dict[str, Any]]:
    """Random search's rows per seed from an earlier run's ``--json``.

    Random search's recipes depend on the seed alone, and it never stops a trial, so
    its epochs to each threshold repeat from run to run (within the epoch or two by
    which two concurrent trials' reports interleave); its wall times are another
    run's.

    Raises:
        EarlierRunError: one line naming what does not fit.
    """
    labels = tuple(str(threshold) for threshold in harder)
    return _rows_from((path,), settings, seeds, labels, RANDOM, "--random-from", COMPARABLE)


#: What phasetune's rows depend on besides ``COMPARABLE``.
PHASETUNE_SETTINGS = (*COMPARABLE, "experiment", "startup_trials", "scheduler")


def phasetune_rows_from(
    paths: tuple[Path, ...], settings: dict[str, Any], seeds: range, labels: tuple[str, ...]
) -> dict[int, dict[str, Any]]:
    """phasetune's rows per seed from earlier runs' ``--json``: the peers' budgets and
    what they are compared with, so that peers can be run again without it. ``labels``:
    the further thresholds this run measures (``_thresholds``' keys).

    Raises:
        EarlierRunError: one line naming what does not fit.
    """
    return _rows_from(
        paths, settings, seeds, labels, PHASETUNE, "--phasetune-from", PHASETUNE_SETTINGS
    )


def _rows_from(
    paths: tuple[Path, ...],
    settings: dict[str, Any],
    seeds: range,
    labels: tuple[str, ...],
    variant: str,
    flag: str,
    keys: tuple[str, ...],
) -> dict[int, dict[str, Any]]:
    """``variant``'s rows per seed from earlier runs' ``--json`` that ran with the same
    ``keys`` of ``settings``, with only the further thresholds (``labels``) this run
    measures."""
    rows: dict[int, dict[str, Any]] = {}
    for path in paths:
        try:
            earlier = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise EarlierRunError(f"{flag} {path}: cannot read it ({error})") from None
        recorded = earlier.get("settings")
        if not isinstance(recorded, dict):
            raise EarlierRunError(
                f"{flag} {path}: it records no settings; use a newer run's --json"
            )
        for key in keys:
            if recorded.get(key) != settings[key]:
                raise EarlierRunError(
                    f"{flag} {path}: it ran with {key} {recorded.get(key)!r}, this run"
                    f" with {settings[key]!r}; use the same {key}"
                )
        rows.update(
            (row["seed"], row) for row in earlier.get("rows", []) if row["variant"] == variant
        )
    missing = [seed for seed in seeds if seed not in rows]
    if missing:
        raise EarlierRunError(
            f"{flag} {' '.join(map(str, paths))}: no {variant} for seed {missing[0]}; use"
            f" seeds {sorted(rows)} or run {variant}"
        )
    for label in labels:
        if any(label not in rows[seed]["harder"] for seed in seeds):
            raise EarlierRunError(
                f"{flag} {' '.join(map(str, paths))}: no epochs to {label}; use thresholds"
                " it measured"
            )
    # Only the thresholds this run measures, so every variant's rows have the same.
    return {
        seed: {**rows[seed], "harder": {label: rows[seed]["harder"][label] for label in labels}}
        for seed in seeds
    }


#: The experiments the searches can run: the quickstart (one task, val/acc thresholds)
#: and the multi-task example (joint vs sequential, the multi-task targets).
EXPERIMENTS = {
    "quickstart": None,
    "multitask": Path(__file__).resolve().parents[1] / "examples" / "multitask.yaml",
}


def _thresholds(
    config: ExperimentConfig,
    experiment: str,
    target: float,
    harder: tuple[float, ...],
    scores: tuple[float, ...] = (),
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The main threshold and the further ones, each as metric -> value. The quickstart:
    val/acc at ``target`` and each of ``harder``. The multi-task example: all of its
    targets at once, and each target alone. Then ``target_score`` at each of ``scores``
    (the multi-task example's first recipe meets all its targets already)."""
    by_score = {f"target_score {s:g}": {"target_score": s} for s in scores}
    if experiment == "quickstart":
        return {"val/acc": target}, {str(t): {"val/acc": t} for t in harder} | by_score
    targets = config.target_list()
    return {t.metric: t.threshold for t in targets}, {
        f"{t.metric} {t.threshold:g}": {t.metric: t.threshold} for t in targets
    } | by_score


def _row(
    seed: int,
    variant: str,
    reports: list[tuple[float, int, Mapping[str, Any]]],
    thresholds: tuple[dict[str, float], dict[str, dict[str, float]]],
    best: Mapping[str, Any],
    best_point: Any,
    trials: int,
    wall_s: float,
    target_metric_names: tuple[str, ...],
) -> dict[str, Any]:
    main, harder = thresholds
    return {
        "seed": seed,
        "variant": variant,
        **_to_target(reports, main),
        "harder": {label: _to_target(reports, bounds) for label, bounds in harder.items()},
        "best_target_score": float(best.get("target_score", -math.inf)),
        "best_val_acc": float(best.get("val/acc", math.nan)),
        "best_metrics": {name: best.get(name) for name in target_metric_names},
        "best_recipe": best_point,
        "trials": trials,
        "epochs": len(reports),
        "wall_s": wall_s,
        "machine": _machine(),
        # Every epoch in the order it was trained: the trial's start order, its
        # target_score and the targets' metrics, so that other thresholds can be
        # measured from a kept run.
        "trace": [
            [order, _rounded(m.get("target_score"))]
            + [_rounded(m.get(name)) for name in target_metric_names]
            for _, order, m in reports
        ],
    }


def _rounded(value: Any) -> float | None:
    return None if value is None else round(float(value), 5)


def run(
    trials: int,
    seeds: int,
    epoch_scale: float | None,
    samples: int | None,
    target: float,
    scheduler: str = "strategy_asha",
    tiny: bool = False,
    startup_trials: int = 10,
    variants: tuple[str, ...] | None = None,
    harder: tuple[float, ...] = (),
    first_seed: int = 0,
    early_stopping: dict[str, float] | None = None,
    random_from: Path | None = None,
    experiment: str = "quickstart",
    harder_scores: tuple[float, ...] = (),
    phasetune_from: tuple[Path, ...] = (),
) -> dict[str, Any]:
    """Run ``variants`` (None: phasetune's search and the three other Ray searches) for
    seeds ``first_seed .. first_seed+seeds-1``; epochs to ``target`` and, from the same
    searches, to each of the ``harder`` thresholds (the multi-task example: to all its
    targets, and to each).

    A peer (``search_peers.PEERS``) gets phasetune's epochs for the seed as its budget,
    so phasetune's search runs first. ``epoch_scale`` and ``samples`` None keep the
    experiment's own. ``early_stopping`` overrides the scheduler's settings
    (``grace_period``, ``grace_fraction``, ``reduction_factor``); ``random_from`` takes
    random search's rows from an earlier run's ``--json`` instead of running it again,
    and ``phasetune_from`` phasetune's (the peers' budgets) from earlier runs'.

    Returns:
        ``settings``, ``rows``: one per seed and variant; ``summary``: per variant,
        over the seeds; ``peers``: phasetune against each peer, per threshold.
    """
    base_config = load_experiment(EXPERIMENTS[experiment])
    epoch_scale = base_config.search.epoch_scale if epoch_scale is None else epoch_scale
    samples = base_config.dataset.num_samples if samples is None else samples
    settings = {
        **_comparable(trials, epoch_scale, samples, target, tiny),
        "experiment": experiment,
        "harder_scores": list(harder_scores),
        "startup_trials": startup_trials,
        "scheduler": scheduler,
        **(early_stopping or {}),
    }
    seed_range = range(first_seed, first_seed + seeds)
    base = base_config.model_dump()
    base["search"].update(
        num_samples=trials,
        epoch_scale=epoch_scale,
        startup_trials=startup_trials,
        **(early_stopping or {}),
    )
    base["dataset"]["num_samples"] = samples
    if experiment == "quickstart":
        base["targets"] = [
            {
                "metric": "val/acc",
                "threshold": target,
                "source": "search-efficiency benchmark threshold (nsl's 0.85 is out of reach"
                " at this budget)",
                "assumed": True,
            }
        ]
    if tiny:  # for the smoke test: tiny data and model, seconds per search
        base["dataset"].update(num_samples=360 if experiment == "quickstart" else 120)
        base["dataset"].update(image_size=16, num_classes=6)
        base["model"].update(width=4, pretrain={"num_samples": 400, "epochs": 1})
    probe = ExperimentConfig.model_validate(base)
    thresholds = _thresholds(probe, experiment, target, harder, harder_scores)
    metric_names = tuple(t.metric for t in probe.target_list())
    earlier_random = (
        random_rows_from(random_from, settings, seed_range, harder) if random_from else {}
    )
    earlier_phasetune = (
        phasetune_rows_from(phasetune_from, settings, seed_range, tuple(thresholds[1]))
        if phasetune_from
        else {}
    )
    earlier = {RANDOM: earlier_random, PHASETUNE: earlier_phasetune}
    searches = _variants(scheduler)
    wanted = _default_variants(scheduler) if variants is None else variants
    chosen = {name: searches[name] for name in searches if name in wanted}
    for name, its_rows in earlier.items():
        if its_rows:
            chosen.setdefault(name, searches[name])
    peers = [name for name in PEERS if name in wanted]
    if peers and PHASETUNE not in chosen:
        raise ValueError(f"{peers[0]} spends phasetune's epochs; run {PHASETUNE} too")
    rows = []
    to_run = [name for name in chosen if not earlier.get(name)]
    # The peers that train in this process need no Ray.
    with (
        tempfile.TemporaryDirectory(prefix="phasetune-bench-") as root,
        ray_running() if to_run or "tune-optuna-asha" in peers else contextlib.nullcontext(),
    ):
        for seed in seed_range:
            names = list(to_run)
            # Later searches in one Ray session find its workers warm; rotating the
            # order spreads that over the variants. Peers need phasetune's epochs first.
            if names:
                names = names[seed % len(names) :] + names[: seed % len(names)]
            if peers:
                names.sort(key=lambda name: name != PHASETUNE)
            by_variant = {name: its_rows[seed] for name, its_rows in earlier.items() if its_rows}
            for name in names:
                config = _config(
                    base, f"{name.replace('+', '_')}-s{seed}", chosen[name], seed, root
                )
                _prepare(config)
                outcome = run_search(config)
                best = outcome.ranked[0].record
                by_variant[name] = _row(
                    seed,
                    name,
                    _reports(outcome.experiment_dir),
                    thresholds,
                    {**best.metrics, "target_score": outcome.ranked[0].target_score},
                    {"strategy": best.strategy, best.strategy: dict(best.params)},
                    len(outcome.ranked),
                    outcome.wall_seconds,
                    metric_names,
                )
            for peer in peers:
                config = _config(base, f"{peer}-s{seed}", searches[PHASETUNE], seed, root)
                _prepare(config)
                log = EpochLog(
                    Path(root) / f"{peer}-s{seed}.jsonl",
                    by_variant[PHASETUNE]["epochs"],
                    target_metrics(config),
                )
                directory = Path(root) / f"{peer}-s{seed}"
                directory.mkdir()
                # A phasetune trial's torch threads, so the same configuration trains
                # to the same numbers in every search: with 2 threads, seed 5's first
                # random trial reached val/acc 0.85 where phasetune's reached 0.8354.
                threads = torch_threads(config.resources.cpus_per_worker)
                outcome = PEERS[peer][0](config, log, directory, threads)
                by_variant[peer] = _row(
                    seed,
                    peer,
                    log.epochs(),
                    thresholds,
                    outcome.best,
                    outcome.best.get("point"),
                    outcome.trials,
                    outcome.wall_seconds,
                    metric_names,
                )
            random = by_variant.get(RANDOM)
            for name in [*chosen, *peers]:
                row = by_variant[name]
                if random is not None:
                    for mine, theirs in [(row, random)] + [
                        (row["harder"][t], random["harder"][t]) for t in row["harder"]
                    ]:
                        mine["vs_random_bound"], mine["vs_random"] = _ratio(
                            mine, theirs, row["epochs"], random["epochs"]
                        )
                rows.append(row)
    return {
        "settings": settings,
        "random_from": str(random_from) if random_from else None,
        "phasetune_from": [str(path) for path in phasetune_from],
        "target": target,
        "thresholds": {"main": thresholds[0], "harder": thresholds[1]},
        "phasetune": PHASETUNE,
        "rows": rows,
        "summary": {name: _summary(rows, name) for name in [*chosen, *peers]},
        "peers": {peer: _against_peer(rows, peer) for peer in peers},
        "peers_of": _peers_of(rows, list(chosen), peers),
    }


def _peers_of(
    rows: list[dict[str, Any]], variants: list[str], peers: list[str]
) -> dict[str, dict[str, Any]]:
    """Each variant of phasetune with one setting changed, where it ran, against each peer."""
    return {
        variant: {peer: _against_peer(rows, peer, variant) for peer in peers}
        for variant in ONE_SETTING_CHANGED
        if variant in variants
    }


def combine(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from several runs' ``--json`` of other seeds with the same settings
    (a long table run seed by seed): their rows, summarised again.

    Raises:
        ValueError: one line naming what differs.
    """
    first = results[0]
    for other in results[1:]:
        if other["settings"] != first["settings"]:
            differ = sorted(
                key
                for key in {*first["settings"], *other["settings"]}
                if first["settings"].get(key) != other["settings"].get(key)
            )
            raise ValueError(
                f"--combine: the runs differ in {', '.join(differ)}; combine like runs"
            )
    rows = [row for result in results for row in result["rows"]]
    seen = set()
    for row in rows:
        if (row["seed"], row["variant"]) in seen:
            raise ValueError(f"--combine: seed {row['seed']} of {row['variant']} is in two runs")
        seen.add((row["seed"], row["variant"]))
    variants = list(dict.fromkeys(row["variant"] for row in rows))
    peers = [name for name in variants if name in PEERS]
    return {
        **first,
        "rows": sorted(rows, key=lambda row: row["seed"]),
        "summary": {name: _summary(rows, name) for name in variants},
        "peers": {peer: _against_peer(rows, peer) for peer in peers},
        "peers_of": _peers_of(rows, variants, peers),
    }


def _prepare(config: ExperimentConfig) -> None:
    """Make (and cache) the data and the pretrained backbone before a search's clock
    starts, so the first search of a seed is not charged for them."""
    context = config.plan_context()
    load_dataset(context.data)
    if context.model.pretrained is not None:
        ensure_pretrained(context.model)


def _against_peer(
    rows: list[dict[str, Any]], peer: str, variant: str = PHASETUNE
) -> dict[str, Any]:
    """Epochs to each threshold, ``variant``'s (phasetune's) over ``peer``'s, per seed
    and as the geometric mean where both met it (``vs_random``'s arithmetic, with the
    peer in random search's place: ``<=`` where only phasetune met it, bounded by the
    peer's budget), and both searches' best recipes."""
    mine = {row["seed"]: row for row in rows if row["variant"] == variant}
    theirs = {row["seed"]: row for row in rows if row["variant"] == peer}
    seeds = sorted(set(mine) & set(theirs))

    def hits(label: str | None) -> list[dict[str, Any]]:
        out = []
        for seed in seeds:
            a = mine[seed] if label is None else mine[seed]["harder"][label]
            b = theirs[seed] if label is None else theirs[seed]["harder"][label]
            bound, ratio = _ratio(a, b, mine[seed]["epochs"], theirs[seed]["epochs"])
            out.append({**a, "vs_random_bound": bound, "vs_random": ratio})
        return out

    def where(label: str | None) -> dict[str, Any]:
        """Wall to the threshold, phasetune's over the peer's (geometric mean where both
        met it), and where each search's epochs to it went."""
        both = [
            (a, b)
            for a, b in ((_hit(mine[s], label), _hit(theirs[s], label)) for s in seeds)
            if a["wall_to_target_s"] and b["wall_to_target_s"]
        ]
        return {
            "wall_vs_peer": _geo_mean(
                [a["wall_to_target_s"] / b["wall_to_target_s"] for a, b in both]
            ),
            "same_hit_trial": sum(
                (a["hit_trial"], a["hit_trial_epochs"]) == (b["hit_trial"], b["hit_trial_epochs"])
                for a, b in both
            ),
            "phasetune_split": _split_median([a for a, _ in both]),
            "peer_split": _split_median([b for _, b in both]),
        }

    labels = list(mine[seeds[0]]["harder"]) if seeds else []
    return {
        "seeds": seeds,
        "main": _geo_mean_vs_random(hits(None)) | {"per_seed": _per_seed(hits(None))} | where(None),
        "harder": {
            label: _geo_mean_vs_random(hits(label))
            | {"per_seed": _per_seed(hits(label))}
            | where(label)
            for label in labels
        },
        "peer_reached": {
            "main": sum(theirs[s]["epochs_to_target"] is not None for s in seeds),
            **{
                label: sum(
                    theirs[s]["harder"][label]["epochs_to_target"] is not None for s in seeds
                )
                for label in labels
            },
        },
        "mean_best_target_score": statistics.fmean(mine[s]["best_target_score"] for s in seeds)
        if seeds
        else None,
        "peer_mean_best_target_score": statistics.fmean(
            theirs[s]["best_target_score"] for s in seeds
        )
        if seeds
        else None,
    }


def _hit(row: dict[str, Any], label: str | None) -> dict[str, Any]:
    """One search's hit of a threshold, with the hit trial's own epochs up to it."""
    hit = row if label is None else row["harder"][label]
    epochs = hit["epochs_to_target"]
    trial = hit.get("hit_trial")
    own = sum(order == trial for order, *_ in row["trace"][:epochs]) if epochs is not None else None
    return {
        "wall_to_target_s": hit["wall_to_target_s"],
        "hit_trial": trial,
        "hit_trial_epochs": own,
        "epochs_to_target": epochs,
        "epochs_per_s": row["epochs"] / row["wall_s"] if row["wall_s"] else None,
    }


def _split_median(hits: list[dict[str, Any]]) -> dict[str, float] | None:
    """Medians over seeds: the hit trial's own epochs, every other trial's epochs before
    the hit (concurrent trials' included), and the epochs the search trained per second."""
    if not hits:
        return None
    return {
        "own": statistics.median(h["hit_trial_epochs"] for h in hits),
        "others": statistics.median(h["epochs_to_target"] - h["hit_trial_epochs"] for h in hits),
        "epochs_per_s": statistics.median(h["epochs_per_s"] for h in hits),
    }


def _per_seed(hits: list[dict[str, Any]]) -> list[str]:
    return [_shown(hit) for hit in hits]


def _shown(hit: dict[str, Any]) -> str:
    bound, ratio = hit.get("vs_random_bound"), hit.get("vs_random")
    return "-" if ratio is None else f"{'' if bound == '=' else bound}{ratio:.2f}x"


def _num(value: float | None, spec: str) -> str:
    return "not reached" if value is None else format(value, spec)


def _seeds(count: int) -> str:
    return f"{count} seed{'' if count == 1 else 's'}"


def _geo_shown(hits: dict[str, Any]) -> str:
    ratio = hits.get("vs_random")
    return "-" if ratio is None else f"{ratio:.2f}x ({_seeds(hits['vs_random_seeds'])})"


def _at_most_shown(hits: dict[str, Any]) -> str:
    bound = hits.get("vs_random_at_most")
    return "-" if bound is None else f"<={bound:.2f}x ({_seeds(hits['vs_random_at_most_seeds'])})"


def verdict(hits: dict[str, Any]) -> str:
    """Whether one threshold's summary meets the goal, and on what evidence.

    The bound over every seed where this search met the threshold decides where there
    is one: it counts the seeds where random search never got there as well. A seed
    where only random search got there fails the goal, whatever the others say.
    """
    ratio, bound = hits["vs_random"], hits["vs_random_at_most"]
    only_random = hits["only_random_seeds"]
    if ratio is None and bound is None:
        if only_random:
            return f"only random search reached it ({_seeds(only_random)}): not met"
        return "undetermined (no seed where both reached it)"
    parts = []
    if ratio is not None:
        parts.append(f"{ratio:.2f}x where both reached it ({_seeds(hits['vs_random_seeds'])})")
    if bound is not None:
        parts.append(
            f"at most {bound:.2f}x over the {_seeds(hits['vs_random_at_most_seeds'])} where"
            " it reached it (random search's budget for its epochs where it never did)"
        )
    if only_random:
        parts.append(f"only random search reached it in {_seeds(only_random)}")
    decisive = bound if bound is not None else ratio
    met = decisive <= GOAL and not only_random
    return f"{'; '.join(parts)}: {'met' if met else 'not met'}"


def peer_verdict(label: str, against: dict[str, dict[str, Any]]) -> str:
    """The peer goal at one threshold: phasetune needs no more epochs than any peer,
    over the seeds where both met it (``label`` None: the main threshold)."""
    parts, met = [], True
    for peer, comparison in against.items():
        hits = comparison["main"] if label is None else comparison["harder"][label]
        ratio = hits["vs_random"]
        if ratio is None:
            parts.append(f"{peer} -")
            continue
        parts.append(f"{peer} {ratio:.2f}x ({_seeds(hits['vs_random_seeds'])})")
        met = met and ratio <= 1.0
    undecided = all(part.endswith(" -") for part in parts)
    outcome = "undetermined" if undecided else "met" if met else "not met"
    return f"{', '.join(parts)}: {outcome}"


def _bounds(threshold: Mapping[str, float]) -> str:
    return " and ".join(f"{name} >= {value:g}" for name, value in threshold.items())


def _print(result: dict[str, Any], trials: int, epoch_scale: float) -> None:
    main = result.get("thresholds", {}).get("main", {"val/acc": result["target"]})
    compared = any(row.get("vs_random_bound") for row in result["rows"])
    width = max([18, *(len(row["variant"]) for row in result["rows"])])
    print(
        f"target: {_bounds(main)}; {trials} trials per phasetune search, epoch_scale"
        f" {epoch_scale:g}; phasetune and the peers run the documents' recipes first; a"
        " peer's budget is phasetune's epochs for the seed; optuna-hyperband and"
        " neps-priorband run one trial at a time"
    )
    print(
        f"{'seed':>4} {'variant':<{width}} {'epochs to target':>16} {'wall to target':>14}"
        f" {'trial':>5} {'best score':>10} {'best acc':>8} {'trials':>6} {'epochs':>6}"
        f" {'wall s':>6} {'vs random':>9}"
    )
    for row in result["rows"]:
        print(
            f"{row['seed']:>4} {row['variant']:<{width}} {_num(row['epochs_to_target'], 'd'):>16}"
            f" {_num(row['wall_to_target_s'], '.0f'):>14} {row['hit_trial'] or '-':>5}"
            f" {row['best_target_score']:>10.4f} {row['best_val_acc']:>8.4f}"
            f" {row.get('trials', '-'):>6} {row['epochs']:>6} {row['wall_s']:>6.0f}"
            f" {_shown(row):>9}"
        )
    machines = sorted({row.get("machine", "not recorded") for row in result["rows"]})
    if len(machines) > 1:
        print(
            f"the rows come from {len(machines)} machines ({'; '.join(machines)}): the same"
            " configuration trains to other numbers on each, so compare them by seed, not"
            " trial by trial"
        )
    print()
    print(
        f"{'variant':<{width}} {'reached':>7} {'median epochs to target':>23}"
        f" {'mean best score':>15} {'mean epochs':>11} {'mean wall s':>11}"
        f" {'vs random (geo mean)':>20} {'at most, all seeds':>18}"
    )
    for name, summary in result["summary"].items():
        print(
            f"{name:<{width}} {summary['reached']:>3}/{summary['seeds']:<3}"
            f" {_num(summary['median_epochs_to_target'], '.0f'):>23}"
            f" {summary['mean_best_target_score']:>15.4f} {summary['mean_epochs']:>11.1f}"
            f" {summary['mean_wall_s']:>11.0f} {_geo_shown(summary):>20}"
            f" {_at_most_shown(summary):>18}"
        )
    harder = next(iter(result["summary"].values()))["harder"]
    if harder:
        print()
        print("the same searches, epochs to each further threshold:")
        print(
            f"{'threshold':>22} {'variant':<{width}} {'reached':>7} {'median epochs':>13}"
            f" {'per seed vs random':>30} {'vs random (geo mean)':>20}"
        )
        for threshold in harder:
            for name, summary in result["summary"].items():
                hits = summary["harder"][threshold]
                per_seed = " ".join(
                    _shown(row["harder"][threshold])
                    for row in result["rows"]
                    if row["variant"] == name
                )
                print(
                    f"{threshold:>22} {name:<{width}} {hits['reached']:>3}/{summary['seeds']:<3}"
                    f" {_num(hits['median_epochs_to_target'], '.0f'):>13} {per_seed:>30}"
                    f" {_geo_shown(hits):>20}"
                )
    against = result.get("peers") or {}
    if against:
        _print_peers(against)
    for variant, its_peers in (result.get("peers_of") or {}).items():
        if its_peers:
            _print_peers(its_peers, variant)
    if not compared:
        return
    print()
    for label, key in [(_bounds(main), None)] + [(t, t) for t in harder]:
        for name in [n for n in result["summary"] if n != RANDOM]:
            summary = result["summary"][name]
            hits = summary if key is None else summary["harder"][key]
            if "vs_random" in hits:
                print(
                    f"goal, {name}: {label} at <= {GOAL}x random search's epochs: {verdict(hits)}"
                )


def _print_peers(against: dict[str, dict[str, Any]], mine: str = PHASETUNE) -> None:
    """``mine`` (phasetune) against each peer: epochs to each threshold (its over the
    peer's), best recipes, and the goal per threshold."""
    print()
    print(f"{mine} against each peer: epochs to each threshold, {mine}'s over the peer's")
    print(
        f"{'threshold':>22} {'peer':<18} {'met: phasetune/peer':>19} {'per seed':>40}"
        f" {'geo mean (both met)':>20}"
    )
    labels = [None, *next(iter(against.values()))["harder"]]
    for label in labels:
        for peer, comparison in against.items():
            hits = comparison["main"] if label is None else comparison["harder"][label]
            reached = comparison["peer_reached"]["main" if label is None else label]
            print(
                f"{label or 'target':>22} {peer:<18}"
                f" {hits['reached']:>9}/{reached:<9} {' '.join(hits['per_seed']):>40}"
                f" {_geo_shown(hits):>20}"
            )
    print()
    print(
        "where the epochs went, where both met it (medians over those seeds): the trial"
        " that met it, its own epochs + every other trial's before it; epochs trained per"
        f" second; wall to the threshold, {mine}'s over the peer's (geo mean); seeds"
        " where the same trial, by start order, met it at the same epoch of its own"
    )
    print(
        f"{'threshold':>22} {'peer':<18} {'own+others':>20} {'peer own+others':>16}"
        f" {'epochs/s':>11} {'wall':>6} {'same trial':>10}"
    )
    for label in labels:
        for peer, comparison in against.items():
            hits = comparison["main"] if label is None else comparison["harder"][label]
            ours, theirs = hits["phasetune_split"], hits["peer_split"]
            if ours is None:
                continue
            print(
                f"{label or 'target':>22} {peer:<18}"
                f" {ours['own']:>9.0f}+{ours['others']:<10.0f}"
                f" {theirs['own']:>6.0f}+{theirs['others']:<9.0f}"
                f" {ours['epochs_per_s']:>5.2f}/{theirs['epochs_per_s']:<5.2f}"
                f" {hits['wall_vs_peer']:>5.2f}x"
                f" {hits['same_hit_trial']:>4}/{hits['vs_random_seeds']:<5}"
            )
    print()
    for peer, comparison in against.items():
        print(
            f"best recipe, mean target_score over {_seeds(len(comparison['seeds']))}:"
            f" {mine} {comparison['mean_best_target_score']:.4f}, {peer}"
            f" {comparison['peer_mean_best_target_score']:.4f}"
        )
    print()
    for label in labels:
        print(
            f"goal, {label or 'target'}: {mine}'s epochs <= every peer's where both met it:"
            f" {peer_verdict(label, against)}"
        )
    recipe_ok = all(
        c["mean_best_target_score"] >= c["peer_mean_best_target_score"] for c in against.values()
    )
    print(
        f"goal, best recipe: {mine}'s mean best target_score >= every peer's:"
        f" {'met' if recipe_ok else 'not met'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--trials", type=int, default=30, help="trials of phasetune's search (and the Ray searches)"
    )
    parser.add_argument("--seeds", type=int, default=1, help="how many seeds")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="the first seed (so a long run can add seeds to an earlier one's)",
    )
    parser.add_argument(
        "--experiment",
        choices=tuple(EXPERIMENTS),
        default="quickstart",
        help="quickstart: val/acc thresholds; multitask: joint vs sequential, its targets",
    )
    parser.add_argument(
        "--epoch-scale", type=float, help="default: the experiment's own (both 0.5 and 0.1)"
    )
    parser.add_argument("--samples", type=int, help="data set size (default: the experiment's)")
    parser.add_argument("--target", type=float, default=0.75, help="val/acc threshold")
    parser.add_argument(
        "--harder",
        type=float,
        nargs="*",
        default=[0.8, 0.84, 0.85],
        help="further val/acc thresholds measured from the same searches",
    )
    parser.add_argument(
        "--harder-score",
        type=float,
        nargs="*",
        help="target_score thresholds measured from the same searches (default: none for"
        " the quickstart; 1.16, 1.18 and 1.2 for the multi-task example, whose first"
        " recipe meets every target)",
    )
    parser.add_argument(
        "--scheduler",
        choices=("asha", "strategy_asha", "phase_asha"),
        default="strategy_asha",
        help="phasetune's early stopping (default: the search's own)",
    )
    parser.add_argument(
        "--startup-trials", type=int, default=10, help="TPE's random trials before it models"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=(
            PHASETUNE,
            "tpe+asha",
            "tpe+strategy_asha",
            "tpe+phase_asha",
            "tpe+fifo",
            RANDOM,
            *ONE_SETTING_CHANGED,
            *PEERS,
            "all",
        ),
        help=f"searches to run (default: {PHASETUNE} and each peer whose package imports);"
        f" a peer spends {PHASETUNE}'s epochs, so it needs {PHASETUNE}; {RANDOM} alone: only"
        f" random search, for a later --random-from; {INDEPENDENT}, {RANDOM_FRACTION},"
        f" {ONE_AT_A_TIME}: {PHASETUNE} with search.multivariate false, or"
        " search.random_fraction 0.33, or search.max_concurrent_trials 1 (--combine them"
        " with the peers' runs to compare); all: the four Ray searches",
    )
    parser.add_argument(
        "--grace-period",
        type=int,
        help="asha, strategy_asha: epochs before the first decision (default 2)",
    )
    parser.add_argument(
        "--grace-fraction",
        type=float,
        help="phase_asha: share of each plan before its first decision (default 0.25)",
    )
    parser.add_argument(
        "--reduction-factor", type=float, help="the share 1/this of trials goes on (default 3)"
    )
    parser.add_argument(
        "--random-from",
        type=Path,
        help="random search's numbers from an earlier run's --json with the same trials,"
        " epoch scale, data size and target (saves running it again)",
    )
    parser.add_argument(
        "--phasetune-from",
        type=Path,
        nargs="+",
        default=(),
        help=f"{PHASETUNE}'s numbers (the peers' budgets) from earlier runs' --json with the"
        " same settings, so that peers run again without it",
    )
    parser.add_argument("--tiny", action="store_true", help="smallest size (smoke test)")
    parser.add_argument(
        "--combine",
        type=Path,
        nargs="+",
        help="run nothing: print the table of earlier runs' --json (other seeds, same"
        " settings) together",
    )
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    if args.combine:
        try:
            result = combine([json.loads(path.read_text()) for path in args.combine])
        except (OSError, ValueError, KeyError) as error:
            parser.error(f"--combine: {error}" if "--combine" not in str(error) else str(error))
        _print(result, result["settings"]["trials"], result["settings"]["epoch_scale"])
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        return
    if args.variants is None:
        # phasetune's numbers taken from earlier runs: the peers alone.
        args.variants = [] if args.phasetune_from else [PHASETUNE]
        for peer in PEERS:
            missing = missing_package(peer)
            if missing:
                print(f"skipped {missing}")
            else:
                args.variants.append(peer)
    for peer in set(args.variants) & set(PEERS):
        missing = missing_package(peer)
        if missing:
            parser.error(missing)
        if (
            PHASETUNE not in args.variants
            and "all" not in args.variants
            and not args.phasetune_from
        ):
            parser.error(
                f"--variants {peer} spends {PHASETUNE}'s epochs; add {PHASETUNE}"
                " or --phasetune-from"
            )
    if args.random_from and args.experiment != "quickstart":
        parser.error("--random-from: the committed random searches are the quickstart's")
    unknown = set(args.variants) - set(_variants(args.scheduler)) - set(PEERS) - {"all"}
    if unknown:
        parser.error(
            f"--variants {' '.join(sorted(unknown))} does not run with --scheduler"
            f" {args.scheduler}; use tpe+{args.scheduler}"
        )
    early_stopping = {
        key: value
        for key, value in (
            ("grace_period", args.grace_period),
            ("grace_fraction", args.grace_fraction),
            ("reduction_factor", args.reduction_factor),
        )
        if value is not None
    }
    if args.random_from and set(args.variants) == {RANDOM}:
        parser.error(
            f"--random-from with --variants {RANDOM} alone leaves nothing to run;"
            " name the searches to compare with it"
        )
    if args.phasetune_from and {PHASETUNE, "all"} & set(args.variants):
        parser.error(f"--phasetune-from with --variants {PHASETUNE} (or all): run it, or take it")
    try:
        SearchConfig.model_validate(early_stopping)
    except ValidationError as error:
        first = error.errors()[0]
        flag = "--" + str(first["loc"][0]).replace("_", "-")
        parser.error(f"{flag}: {first['msg'].lower()} (got {first['input']!r})")
    try:
        result = _run_from_args(args, early_stopping)
    except EarlierRunError as error:
        # An earlier run's file is read before Ray or any search starts: a wrong one
        # costs one line, and nothing is written.
        parser.error(str(error))
    _print(result, args.trials, result["settings"]["epoch_scale"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


def _run_from_args(args: argparse.Namespace, early_stopping: dict[str, float]) -> dict[str, Any]:
    return run(
        args.trials,
        args.seeds,
        args.epoch_scale,
        args.samples,
        args.target,
        args.scheduler,
        args.tiny,
        args.startup_trials,
        _default_variants(args.scheduler) + tuple(v for v in args.variants if v in PEERS)
        if "all" in args.variants
        else tuple(args.variants),
        tuple(args.harder),
        args.first_seed,
        early_stopping or None,
        args.random_from,
        args.experiment,
        tuple(
            args.harder_score
            if args.harder_score is not None
            else (1.16, 1.18, 1.2)
            if args.experiment == "multitask"
            else ()
        ),
        tuple(args.phasetune_from),
    )


if __name__ == "__main__":
    main()
