"""Search efficiency: epochs to the target, phasetune's search vs random search.

Four searches over the quickstart's space (progressive vs single_phase on the synthetic
signs), with the same trial budget and seed:

- ``phasetune``: what ``phasetune run`` does: the documents' baselines first, then
  Optuna's TPE, with phasetune's early stopping (``--scheduler``: strategy_asha, as
  the quickstart, or asha, or phase_asha);
- ``tpe+strategy_asha``: the same without the baselines, so only sampler and scheduler
  count;
- ``random+fifo``: random search, every trial runs its whole plan (the obvious
  alternative);
- ``tpe+fifo``: TPE alone, every trial runs its whole plan.

TPE draws its first ``--startup-trials`` trials (``search.startup_trials``, default 10)
from a random sampler with the same seed, so the three searches without baselines
start from the same recipes; TPE models from then on.

The target is ``val/acc >= --target`` (default 0.75), not the quickstart's ``nsl``
0.85: at the halved epochs (``epoch_scale`` 0.5) the quickstart's best trials reach
about 0.8, so 0.85 is mostly never reached and there would be nothing to compare. The
searches optimise ``target_score`` against that threshold.

The same searches are also measured against harder thresholds (``--harder``, default
0.80 and 0.82 val/acc) from the same reports. Random search meets 0.75 within its
first few trials (2 to 7 of 20 in three seeds), before TPE has modelled anything, so
there only the baselines and the scheduler can differ; a threshold near the best
that a budget finds is where the sampler has to earn its keep.

Definitions, per search. Every epoch a trial reports is placed on one clock: the trial's
start (from Tune's ``result.json``: its whole-second ``timestamp`` minus ``time_total_s``,
narrowed over all of the trial's reports) plus that epoch's ``time_total_s``.

- *epochs to target*: the number of epochs reported by all trials, in that order, up to
  and including the first epoch whose ``val/acc`` meets the target; concurrent trials'
  epochs count as spent. "not reached" when no epoch meets it (then *epochs* is the
  budget spent).
- *wall to target*: from the first trial's start to that epoch's report.
- *best score*, *best acc*: the top-ranked trial's final ``target_score`` and ``val/acc``.
- *epochs*, *wall s*: all epochs the search ran; the search's wall time (data and the
  pretrained backbone are prepared before the clock starts).
- *vs random*: epochs to target over random search's with the same seed; ``<=`` when
  random search did not reach it (its budget is used), ``>=`` when this one did not. The
  summary gives the geometric mean over seeds where both reached it and, where no seed is
  ``>=``, an upper bound over every seed where this search reached it (*at most, all
  seeds*: random search's epochs to a threshold it never met exceed its budget). The
  goal is <= 0.5x; the bound decides where there is one.

By default only phasetune and random search run, one seed (7.5 minutes here);
``--variants all`` adds TPE with early stopping and TPE alone.

    python benchmarks/search_efficiency.py                 # 12 trials, seed 0, epoch_scale 0.5
    python benchmarks/search_efficiency.py --variants all --seeds 2
    python benchmarks/search_efficiency.py --scheduler phase_asha --trials 30 --seeds 5
    python benchmarks/search_efficiency.py --startup-trials 4
    python benchmarks/search_efficiency.py --harder 0.8 0.82 0.84
    python benchmarks/search_efficiency.py --trials 50 --seeds 2 --first-seed 1
    python benchmarks/search_efficiency.py --variants random+fifo --json random.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from search.config import ExperimentConfig, SearchConfig, load_experiment
from search.experiment import run_search
from search.ray_runtime import ray_running
from trainables.data import load_dataset
from trainables.models import ensure_pretrained

RANDOM = "random+fifo"
GOAL = 0.5


PHASETUNE = "phasetune"


def _variants(scheduler: str) -> dict[str, tuple[str, str, bool]]:
    """Variant name -> (sampler, scheduler, baselines first)."""
    return {
        PHASETUNE: ("tpe", scheduler, True),
        f"tpe+{scheduler}": ("tpe", scheduler, False),
        RANDOM: ("random", "fifo", False),
        "tpe+fifo": ("tpe", "fifo", False),
    }


def _config(
    base: dict[str, Any],
    name: str,
    variant: tuple[str, str, bool],
    seed: int,
    root: str,
) -> ExperimentConfig:
    sampler, scheduler, baselines = variant
    raw = json.loads(json.dumps(base))
    raw["name"] = name
    raw["search"].update(
        sampler=sampler, scheduler=scheduler, seed=seed, evaluate_baselines=baselines
    )
    raw["storage"] = {"path": root}
    return ExperimentConfig.model_validate(raw)


def _reports(experiment_dir: Path) -> list[tuple[float, int, float]]:
    """Every reported epoch as (seconds since the first trial started, trial's start
    order from 1, its ``val/acc``), in report order."""
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
        (start + r["time_total_s"] - first, order, r.get("val/acc", -math.inf))
        for order, (start, results) in enumerate(trials, start=1)
        for r in results
    ]
    return sorted(reports)


def _to_target(reports: list[tuple[float, int, float]], threshold: float) -> dict[str, Any]:
    for spent, (at, order, acc) in enumerate(reports, start=1):
        if acc >= threshold:
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
    return {
        "seeds": len(mine),
        **_geo_mean_vs_random(mine),
        "mean_best_target_score": statistics.fmean(r["best_target_score"] for r in mine),
        "mean_epochs": statistics.fmean(r["epochs"] for r in mine),
        "mean_wall_s": statistics.fmean(r["wall_s"] for r in mine),
        # Each further threshold, from the same searches.
        "harder": {
            threshold: _geo_mean_vs_random([row["harder"][threshold] for row in mine])
            for threshold in (mine[0]["harder"] if mine else {})
        },
    }


#: What must match for random search's rows of one run to stand in another's.
COMPARABLE = ("trials", "epoch_scale", "samples", "target", "tiny")


def _comparable(
    trials: int, epoch_scale: float, samples: int, target: float, tiny: bool
) -> dict[str, Any]:
    return dict(zip(COMPARABLE, (trials, epoch_scale, samples, target, tiny), strict=True))


def random_rows_from(
    path: Path, settings: dict[str, Any], seeds: range, harder: tuple[float, ...]
) -> dict[int, dict[str, Any]]:
    """Random search's rows per seed from an earlier run's ``--json``.

    Random search's recipes depend on the seed alone, and it never stops a trial, so
    its epochs to each threshold repeat from run to run (within the epoch or two by
    which two concurrent trials' reports interleave); its wall times are another
    run's.

    Raises:
        ValueError: one line naming what does not fit.
    """
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"--random-from {path}: cannot read it ({error})") from None
    recorded = earlier.get("settings")
    if not isinstance(recorded, dict):
        raise ValueError(f"--random-from {path}: it records no settings; use a newer run's --json")
    for key in COMPARABLE:
        if recorded.get(key) != settings[key]:
            raise ValueError(
                f"--random-from {path}: it ran with {key} {recorded.get(key)!r}, this run"
                f" with {settings[key]!r}; use the same {key}"
            )
    rows = {row["seed"]: row for row in earlier.get("rows", []) if row["variant"] == RANDOM}
    missing = [seed for seed in seeds if seed not in rows]
    if missing:
        raise ValueError(
            f"--random-from {path}: no random search for seed {missing[0]}; use seeds"
            f" {sorted(rows)} or run random search"
        )
    for threshold in harder:
        if any(str(threshold) not in rows[seed]["harder"] for seed in seeds):
            raise ValueError(
                f"--random-from {path}: no epochs to --harder {threshold:g}; use"
                f" thresholds it measured"
            )
    # Only the thresholds this run measures, so every variant's rows have the same.
    return {
        seed: {**rows[seed], "harder": {str(t): rows[seed]["harder"][str(t)] for t in harder}}
        for seed in seeds
    }


def run(
    trials: int,
    seeds: int,
    epoch_scale: float,
    samples: int,
    target: float,
    scheduler: str = "strategy_asha",
    tiny: bool = False,
    startup_trials: int = 10,
    variants: tuple[str, ...] | None = None,
    harder: tuple[float, ...] = (),
    first_seed: int = 0,
    early_stopping: dict[str, float] | None = None,
    random_from: Path | None = None,
) -> dict[str, Any]:
    """Run random search and ``variants`` (None: all three others) for seeds
    ``first_seed .. first_seed+seeds-1``; epochs to ``target`` and, from the same
    searches, to each of the ``harder`` thresholds.

    ``early_stopping`` overrides the scheduler's settings (``grace_period``,
    ``grace_fraction``, ``reduction_factor``); ``random_from`` takes random search's
    rows from an earlier run's ``--json`` instead of running it again.

    Returns:
        ``settings``, ``rows``: one per seed and variant; ``summary``: per variant,
        over the seeds.
    """
    settings = {
        **_comparable(trials, epoch_scale, samples, target, tiny),
        "startup_trials": startup_trials,
        "scheduler": scheduler,
        **(early_stopping or {}),
    }
    seed_range = range(first_seed, first_seed + seeds)
    earlier_random = (
        random_rows_from(random_from, settings, seed_range, harder) if random_from else {}
    )
    base = load_experiment(None).model_dump()
    base["search"].update(
        num_samples=trials,
        epoch_scale=epoch_scale,
        startup_trials=startup_trials,
        **(early_stopping or {}),
    )
    base["dataset"]["num_samples"] = samples
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
        base["dataset"].update(num_samples=360, image_size=16, num_classes=6)
        base["model"].update(width=4, pretrain={"num_samples": 400, "epochs": 1})
    chosen = {
        name: variant
        for name, variant in _variants(scheduler).items()
        if name == RANDOM or variants is None or name in variants
    }
    rows = []
    with tempfile.TemporaryDirectory(prefix="phasetune-bench-") as root, ray_running():
        for seed in seed_range:
            names = [name for name in chosen if not (name == RANDOM and earlier_random)]
            # Later searches in one Ray session find its workers warm; rotating the
            # order spreads that over the variants.
            names = names[seed % len(names) :] + names[: seed % len(names)]
            by_variant = {}
            for name in names:
                config = _config(
                    base, f"{name.replace('+', '_')}-s{seed}", chosen[name], seed, root
                )
                # Made (and cached) before the search's clock starts, so the first
                # search of a seed is not charged for them.
                context = config.plan_context()
                load_dataset(context.data)
                if context.model.pretrained is not None:
                    ensure_pretrained(context.model)
                outcome = run_search(config)
                reports = _reports(outcome.experiment_dir)
                best = outcome.ranked[0]
                by_variant[name] = {
                    "seed": seed,
                    "variant": name,
                    **_to_target(reports, target),
                    "harder": {str(t): _to_target(reports, t) for t in harder},
                    "best_target_score": best.target_score,
                    "best_val_acc": best.record.metrics.get("val/acc", math.nan),
                    "epochs": len(reports),
                    "wall_s": outcome.wall_seconds,
                }
            if earlier_random:
                by_variant[RANDOM] = earlier_random[seed]
            random = by_variant[RANDOM]
            for name in chosen:
                row = by_variant[name]
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
        "target": target,
        "phasetune": PHASETUNE,
        "rows": rows,
        "summary": {name: _summary(rows, name) for name in chosen},
    }


def _shown(hit: dict[str, Any]) -> str:
    bound, ratio = hit["vs_random_bound"], hit["vs_random"]
    return "-" if ratio is None else f"{'' if bound == '=' else bound}{ratio:.2f}x"


def _num(value: float | None, spec: str) -> str:
    return "not reached" if value is None else format(value, spec)


def _seeds(count: int) -> str:
    return f"{count} seed{'' if count == 1 else 's'}"


def _geo_shown(hits: dict[str, Any]) -> str:
    ratio = hits["vs_random"]
    return "-" if ratio is None else f"{ratio:.2f}x ({_seeds(hits['vs_random_seeds'])})"


def _at_most_shown(hits: dict[str, Any]) -> str:
    bound = hits["vs_random_at_most"]
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


def _print(result: dict[str, Any], trials: int, epoch_scale: float) -> None:
    print(
        f"target: val/acc >= {result['target']:g} (nsl's 0.85 is seldom reached at this budget);"
        f" {trials} trials per search, epoch_scale {epoch_scale:g}; only phasetune runs the"
        " documents' baselines first"
    )
    print(
        f"{'seed':>4} {'variant':<16} {'epochs to target':>16} {'wall to target':>14}"
        f" {'trial':>5} {'best score':>10} {'best acc':>8} {'epochs':>6} {'wall s':>6}"
        f" {'vs random':>9}"
    )
    for row in result["rows"]:
        shown = _shown(row)
        print(
            f"{row['seed']:>4} {row['variant']:<16} {_num(row['epochs_to_target'], 'd'):>16}"
            f" {_num(row['wall_to_target_s'], '.0f'):>14} {row['hit_trial'] or '-':>5}"
            f" {row['best_target_score']:>10.4f} {row['best_val_acc']:>8.4f}"
            f" {row['epochs']:>6} {row['wall_s']:>6.0f} {shown:>9}"
        )
    print()
    print(
        f"{'variant':<16} {'reached':>7} {'median epochs to target':>23}"
        f" {'median wall to target':>21} {'mean best score':>15} {'mean epochs':>11}"
        f" {'mean wall s':>11} {'vs random (geo mean)':>20} {'at most, all seeds':>18}"
    )
    for name, summary in result["summary"].items():
        print(
            f"{name:<16} {summary['reached']:>3}/{summary['seeds']:<3}"
            f" {_num(summary['median_epochs_to_target'], '.0f'):>23}"
            f" {_num(summary['median_wall_to_target_s'], '.0f'):>21}"
            f" {summary['mean_best_target_score']:>15.4f} {summary['mean_epochs']:>11.1f}"
            f" {summary['mean_wall_s']:>11.0f} {_geo_shown(summary):>20}"
            f" {_at_most_shown(summary):>18}"
        )
    harder = next(iter(result["summary"].values()))["harder"]
    if harder:
        print()
        print("the same searches, epochs to a harder val/acc threshold:")
        print(
            f"{'threshold':>9} {'variant':<16} {'reached':>7} {'median epochs':>13}"
            f" {'per seed vs random':>30} {'vs random (geo mean)':>20}"
            f" {'at most, all seeds':>18}"
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
                    f"{threshold:>9} {name:<16} {hits['reached']:>3}/{summary['seeds']:<3}"
                    f" {_num(hits['median_epochs_to_target'], '.0f'):>13} {per_seed:>30}"
                    f" {_geo_shown(hits):>20} {_at_most_shown(hits):>18}"
                )
    print()
    for threshold, key in [(result["target"], None)] + [(float(t), t) for t in harder]:
        for name in [n for n in result["summary"] if n != RANDOM]:
            summary = result["summary"][name]
            hits = summary if key is None else summary["harder"][key]
            print(
                f"goal, {name}: val/acc >= {threshold:g} at <= {GOAL}x random search's"
                f" epochs: {verdict(hits)}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12, help="trials per search")
    parser.add_argument("--seeds", type=int, default=1, help="how many seeds")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="the first seed (so a long run can add seeds to an earlier one's)",
    )
    parser.add_argument("--epoch-scale", type=float, default=0.5)
    parser.add_argument("--samples", type=int, default=2400, help="data set size")
    parser.add_argument("--target", type=float, default=0.75, help="val/acc threshold")
    parser.add_argument(
        "--harder",
        type=float,
        nargs="*",
        default=[0.8, 0.82],
        help="further val/acc thresholds measured from the same searches",
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
        default=[PHASETUNE],
        choices=(
            PHASETUNE,
            "tpe+asha",
            "tpe+strategy_asha",
            "tpe+phase_asha",
            "tpe+fifo",
            RANDOM,
            "all",
        ),
        help="searches to run besides random search, which always runs (the ratios need"
        f" it); {RANDOM} alone: only random search, for a later --random-from; all: every one",
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
    parser.add_argument("--tiny", action="store_true", help="smallest size (smoke test)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    unknown = set(args.variants) - set(_variants(args.scheduler)) - {"all"}
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
    # Checked before Ray starts, so a wrong file costs a line, not a search.
    try:
        if args.random_from:
            random_rows_from(
                args.random_from,
                _comparable(args.trials, args.epoch_scale, args.samples, args.target, args.tiny),
                range(args.first_seed, args.first_seed + args.seeds),
                tuple(args.harder),
            )
    except ValueError as error:
        parser.error(str(error))
    try:
        SearchConfig.model_validate(early_stopping)
    except ValidationError as error:
        first = error.errors()[0]
        flag = "--" + str(first["loc"][0]).replace("_", "-")
        parser.error(f"{flag}: {first['msg'].lower()} (got {first['input']!r})")
    result = run(
        args.trials,
        args.seeds,
        args.epoch_scale,
        args.samples,
        args.target,
        args.scheduler,
        args.tiny,
        args.startup_trials,
        None if "all" in args.variants else tuple(args.variants),
        tuple(args.harder),
        args.first_seed,
        early_stopping or None,
        args.random_from,
    )
    _print(result, args.trials, args.epoch_scale)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
