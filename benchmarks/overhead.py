"""Overhead of a strategy search through phasetune, against the same trainings by hand.

One set of trainings runs three ways: ``--trials`` recipes of the quickstart's task
(its data set, model and cached pretrained backbone), alternately single-phase and
progressive (frozen backbone, then its top quarter, then all; 10x lower lr each
phase) at different learning rates, ``--epochs`` epochs each (single-phase only
below 3 epochs), batch 32, constant lr, no early stopping, an evaluation per epoch.

plain
    A hand-written PyTorch loop: no Ray, no phasetune engine. The model from
    ``build_model``, batches from ``iterate_batches``, AdamW and cross-entropy; per
    phase the plan's trainable layer groups (frozen ones in eval mode, as the
    engine keeps them) and lr; after every epoch the validation loss and accuracy.
    Two trials at a time in a process pool of 2 (spawned once, one torch thread
    each). Leaves out what a search adds: checkpoints, TensorBoard events,
    reporting, the engine's extra metrics (target score, per-task bests, lrs),
    resuming.
tune_1_worker
    The search's own path: ``tune_trainable(launch_settings(...))`` in a
    ``tune.Tuner`` given these configs, FIFO, 2 trials at a time, 1 CPU each, so
    each trial runs the engine in its own Tune actor. Every epoch the engine writes
    TensorBoard events and reports its metrics with a checkpoint (2 kept); Tune's
    JSON and CSV result loggers run as in a search. Leaves out: Optuna (a
    suggestion takes milliseconds), the search's progress lines and plan files, and
    the ranking and export after the last trial.
tune_2_workers
    As tune_1_worker with 2 Ray Train workers per trial (``TorchTrainer``, DDP over
    gloo, 1 CPU each), so one trial at a time. Each worker takes ``batch_size``
    samples per step from its half of the data: an epoch has half the steps. It
    trains only the first ``--ddp-trials`` of the recipes (default 2): what it adds
    is a worker group started per trial, the same for every trial.

plain and tune_1_worker do the same work - the same plans (``plan_for_trial``),
seeds, batches, optimiser steps and evaluations - and end at the same val/loss and
val/acc. Data and backbone are prepared before any variant runs, and plain runs
before Ray starts, so Ray's background processes count against phasetune.

Printed per variant: wall time; training time (the epochs - training, evaluation,
metrics - summed over trials: plain's loop, the engine's ``time/epoch_s``); overhead
per trial (trial wall time minus the engine's ``time/total_s``; plain: minus its
loop's time); wall time per trial over plain's (every variant uses both cores: two
1-CPU slots or one trial of two workers), as a ratio and in seconds on a slot (wall
time x slots / trials, less plain's: each variant's process starts and idle slots
included, which overhead per trial leaves to plain's launch); the last epoch's
val/loss and val/acc. Then
where the time goes, in seconds on the driver's clock and the engine's; a trial
starts when Tune adds it, which is as soon as a slot frees:

- launch: the variant's start to its first trial's (plain: spawning the pool).
- actor start: a trial's start to its Tune actor running. The search reuses actors
  (``reuse_actors``), so only each slot's first trial starts a new process that
  imports Ray, torch, torchmetrics and phasetune; ``--no-reuse-actors`` starts one
  per trial.
- setup: the actor running to its first result, less the engine's time until
  then: plan, data, model, TensorBoard writer, delivering the result (plain: data
  and model). Actor start and setup make up a trial's start to its first report.
- phase setup: the engine's time outside epochs and reports, per trial: layer
  groups and a new optimiser each phase. A process's first optimiser imports
  ``torch._dynamo``: plain pays that once per pool process, Tune once per trial.
- report/epoch: between two epochs of a phase, the engine's time outside
  ``time/epoch_s``: TensorBoard events, writing the checkpoint, ``report``.
- 1st epoch extra: epoch 1 minus the mean of its phase's other epochs (a fresh
  process warming up).
- end: a trial's last result to Tune marking it complete.
- driver end: the last trial's end to ``fit`` returning (plain: pool shutdown).
- Tune-engine: Tune's ``time_total_s`` minus the engine's ``time/total_s``.
- idle/slot: wall time minus the trials' wall times summed per slot.

Then tune_1_worker's overhead per trial apart for the trials that started a new
process (each slot's first, with actors reused) and for those that reused one. The
last line adds up what tune_1_worker's trial costs over plain's, step by step,
against the difference of their mean trial wall times.

``--scale`` changes the model's width; a new width pretrains its backbone once
(cached, not timed).

    python benchmarks/overhead.py                         # 8 trials x 6 epochs, quickstart
    python benchmarks/overhead.py --trials 16 --epochs 8 --json overhead.json  # ~20 s trials
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

# Only what a hand-written loop needs is imported at the top: the plain variant's
# pool processes import this module, and Ray, Tune and the engine would add seconds
# to their start that a script of one's own does not pay.
from trainables.data import Split, iterate_batches, load_dataset
from trainables.models import build_model
from trainables.phases import PhasePlan

#: Trial slots: 2 cores, one CPU per trial or per worker.
SLOTS = 2
#: Learning rates the recipes cycle through (progressive: its first phase's).
LEARNING_RATES = (1e-3, 3e-3, 3e-4, 1e-2)
#: Validation batch, as the engine evaluates.
EVAL_BATCH = 256
#: Last-epoch metrics every row carries: plain and tune_1_worker reach the same.
COMPARED = ("train/loss", "train/acc", "val/loss", "val/acc")


def experiment(samples: int, scale: float, tiny: bool, root: str) -> Any:
    """The quickstart's experiment at ``samples`` images and ``scale`` x its width."""
    from search.config import ExperimentConfig, load_experiment

    raw = load_experiment(None).model_dump()
    raw["name"] = "overhead"
    raw["dataset"]["num_samples"] = samples
    raw["model"]["width"] = max(4, round(raw["model"]["width"] * scale))
    # Plans run the epochs they name; the quickstart would halve them.
    raw["search"]["epoch_scale"] = 1.0
    raw["storage"] = {"path": root}
    if tiny:  # for the smoke test: tiny data and model
        raw["dataset"].update(num_samples=360, image_size=16, num_classes=6)
        raw["model"].update(width=4, pretrain={"num_samples": 400, "epochs": 1})
    return ExperimentConfig.model_validate(raw)


def trial_configs(trials: int, epochs: int, num_groups: int) -> list[dict[str, Any]]:
    """Tune configs of the recipes: single-phase and progressive in turn."""
    configs = []
    for index in range(trials):
        lr = LEARNING_RATES[(index // 2) % len(LEARNING_RATES)]
        common = {
            "batch_size": 32,
            "dropout": 0.2,
            "lr_schedule": "constant",
            "early_stopping_patience": 0,
        }
        if index % 2 and epochs >= 3:
            params = {
                **common,
                "frozen_epochs": (epochs + 2) // 3,
                "partial_epochs": (epochs + 1) // 3,
                "full_epochs": epochs // 3,
                "unfreeze_depth": max(1, round(num_groups / 4)),
                "base_lr": lr,
                "lr_decay": 10.0,
            }
            configs.append({"strategy": "progressive", "progressive": params})
        else:
            params = {**common, "epochs": epochs, "lr": lr / 10}
            configs.append({"strategy": "single_phase", "single_phase": params})
    return configs


@dataclasses.dataclass(frozen=True)
class _Trial:
    """One trial's times in seconds (None: the variant has no such step).

    Attributes:
        wall: From its start (a free slot) to its end.
        total: The engine's ``time/total_s`` (plain: its loop, phase setup included).
        epochs: ``(phase, seconds)`` of every epoch: training, evaluation, metrics.
        setup: Before epoch 1 and outside the engine's time: plan, data, model,
            TensorBoard writer, and (Tune) delivering the first result.
        phase_setup: Inside the engine's time, outside epochs and reports: layer
            groups and the optimiser, each phase.
    """

    wall: float
    total: float
    epochs: list[tuple[int, float]]
    setup: float
    phase_setup: float
    metrics: dict[str, float]
    actor_start: float | None = None
    report: float | None = None
    end: float | None = None
    tune_minus_engine: float | None = None
    process: int | None = None


# -- plain ------------------------------------------------------------------


@torch.no_grad()
def _evaluate(model: torch.nn.Module, split: Split) -> dict[str, float]:
    model.eval()
    loss_sum, correct = 0.0, 0
    for images, labels in iterate_batches(split, EVAL_BATCH, shuffle=False, generator=None):
        logits = model(images)["cls"]
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        correct += int((logits.argmax(1) == labels).sum())
    return {"val/loss": loss_sum / len(split), "val/acc": correct / len(split)}


def plain_trial(plan: PhasePlan) -> dict[str, Any]:
    """Train ``plan`` by hand in this process.

    Returns:
        Wall-clock marks (start, training, end), each epoch's ``[phase, seconds]``,
        and the last epoch's metrics under the engine's names.
    """
    started = time.time()  # wall clock: compared with the parent's
    torch.set_num_threads(1)
    torch.manual_seed(plan.seed)  # as the engine does: the same initial head
    data = load_dataset(plan.data)
    model = build_model(plan.model, data.num_classes)
    generator = torch.Generator().manual_seed(plan.seed)
    training = time.time()
    epochs: list[list[float]] = []
    metrics: dict[str, float] = {}
    for number, phase in enumerate(plan.phases, start=1):
        trainable = phase.trainable_groups(len(model.layer_groups))
        for index, group in enumerate(model.layer_groups):
            group.requires_grad_(index in trainable)
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad],
            lr=phase.lr,
            weight_decay=plan.weight_decay,
        )
        for _ in range(phase.epochs):
            epoch_started = time.perf_counter()
            model.train()
            for index, group in enumerate(model.layer_groups):
                if index not in trainable:
                    group.eval()  # frozen BatchNorm statistics hold
            # Summed as tensors, as the engine does: no host sync per step.
            loss_sum = torch.zeros(())
            correct = torch.zeros((), dtype=torch.long)
            steps = 0
            for images, labels in iterate_batches(
                data.train, plan.batch_size, shuffle=True, generator=generator
            ):
                logits = model(images)["cls"]
                loss = F.cross_entropy(logits, labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach()
                correct += (logits.argmax(1) == labels).sum()
                steps += 1
            metrics = {
                "train/loss": float(loss_sum) / steps,
                "train/acc": int(correct) / len(data.train),
                **_evaluate(model, data.val),
            }
            epochs.append([number, time.perf_counter() - epoch_started])
    return {"start": started, "training": training, "end": time.time(), "epochs": epochs, **metrics}


def _plain_variant(plans: Sequence[PhasePlan]) -> dict[str, Any]:
    """The plans by hand, ``SLOTS`` at a time in a process pool."""
    # Spawned, not forked: a forked child inherits the parent's torch thread pools
    # (and Ray's threads when Ray runs), which can deadlock.
    context = multiprocessing.get_context("spawn")
    started = time.time()
    pool = context.Pool(SLOTS)
    try:
        results = list(pool.imap_unordered(plain_trial, plans, chunksize=1))
        pool.close()
        pool.join()
    finally:
        pool.terminate()
    ended = time.time()
    trials = []
    for result in results:
        epochs = [(phase, seconds) for phase, seconds in result["epochs"]]
        loop = result["end"] - result["training"]
        trials.append(
            _Trial(
                wall=result["end"] - result["start"],
                total=loop,
                epochs=epochs,
                setup=result["training"] - result["start"],
                phase_setup=loop - sum(seconds for _, seconds in epochs),
                metrics={name: result[name] for name in COMPARED},
            )
        )
    return _row(
        trials,
        wall=ended - started,
        concurrency=SLOTS,
        launch=min(result["start"] for result in results) - started,
        driver_end=ended - max(result["end"] for result in results),
    )


# -- through phasetune's Tune path ------------------------------------------


@dataclasses.dataclass
class _TrialClock:
    """Driver-side times of one trial's events, and what each result said."""

    added: float = 0.0
    running: float = 0.0
    completed: float = 0.0
    results: list[tuple[float, dict[str, float]]] = dataclasses.field(default_factory=list)

    def trial(self) -> _Trial:
        """The trial's times: events on the driver's clock, durations on the engine's."""
        at = [when for when, _ in self.results]
        results = [result for _, result in self.results]
        epochs = [(r["phase"], r["time/epoch_s"]) for r in results]
        # Between two epochs of one phase the engine only logs, checkpoints and reports.
        reports = [
            after["time/total_s"] - before["time/total_s"] - after["time/epoch_s"]
            for before, after in itertools.pairwise(results)
            if before["phase"] == after["phase"]
        ]
        report = statistics.fmean(reports) if reports else None
        total = results[-1]["time/total_s"]
        return _Trial(
            wall=self.completed - self.added,
            total=total,
            epochs=epochs,
            setup=at[0] - self.running - results[0]["time/total_s"],
            phase_setup=total
            - sum(seconds for _, seconds in epochs)
            - (report or 0.0) * (len(results) - 1),
            metrics={name: results[-1][name] for name in COMPARED},
            actor_start=self.running - self.added,
            report=report,
            end=self.completed - at[-1],
            tune_minus_engine=results[-1]["time_total_s"] - total,
            process=results[0]["pid"],
        )


#: What the rows take from each result.
_RESULT_KEYS = (
    "epoch",
    "phase",
    "time/epoch_s",
    "time/total_s",
    "time_total_s",
    "pid",
    *COMPARED,
)


def _tune_pieces(
    configs: Sequence[dict[str, Any]], clocks: dict[str, _TrialClock]
) -> tuple[Any, Any, Any]:
    """A searcher that hands out ``configs`` in order, and a FIFO scheduler and a
    callback that time every trial into ``clocks``.

    The scheduler is what learns when Tune adds a trial (callbacks hear of it only
    once its actor runs). Defined in here so that importing this module needs no Ray.
    """
    from ray.tune import Callback
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import Searcher

    class RecipeList(Searcher):
        def __init__(self) -> None:
            super().__init__()
            self.pending = [json.loads(json.dumps(config)) for config in configs]

        def suggest(self, trial_id: str) -> dict[str, Any] | str:
            return self.pending.pop(0) if self.pending else Searcher.FINISHED

        def on_trial_complete(
            self, trial_id: str, result: dict | None = None, error: bool = False
        ) -> None:
            """Nothing to learn: the list is fixed."""

        def save(self, checkpoint_path: str) -> None:
            """Nothing to keep: a benchmark is not resumed."""

    class AddedClock(FIFOScheduler):
        def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
            clocks.setdefault(trial.trial_id, _TrialClock()).added = time.perf_counter()
            super().on_trial_add(tune_controller, trial)

    class EventClock(Callback):
        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            clocks[trial.trial_id].running = time.perf_counter()

        def on_trial_result(
            self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
        ) -> None:
            clock = clocks[trial.trial_id]
            # Tune repeats the last result when the function returns; keep each epoch once.
            if clock.results and clock.results[-1][1]["epoch"] == result.get("epoch"):
                return
            clock.results.append((time.perf_counter(), {k: result[k] for k in _RESULT_KEYS}))

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            clocks[trial.trial_id].completed = time.perf_counter()

    return RecipeList(), AddedClock(), EventClock()


def _tune_variant(
    config: Any,
    configs: list[dict[str, Any]],
    workers: int,
    root: Path,
    reuse_actors: bool = True,
) -> dict[str, Any]:
    """The configs as a search runs them, ``workers`` Ray Train workers per trial
    (``reuse_actors``: one Tune actor runs trial after trial, as in a search)."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from search.experiment import launch_settings
    from trainables.launch import tune_trainable
    from trainables.storage import ExperimentStore

    experiment_dir = root / f"tune-{workers}"
    settings = dataclasses.replace(
        launch_settings(config, ExperimentStore.at(experiment_dir)), workers=workers
    )
    concurrency = max(1, SLOTS // workers)
    clocks: dict[str, _TrialClock] = {}
    searcher, scheduler, callback = _tune_pieces(configs, clocks)
    tuner = tune.Tuner(
        tune_trainable(settings),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=len(configs),
            # Tune adds a trial only when a slot is free, as in a search.
            max_concurrent_trials=concurrency,
            reuse_actors=reuse_actors,
        ),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=str(experiment_dir),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            callbacks=[JsonLoggerCallback(), CSVLoggerCallback(), callback],
            verbose=0,
        ),
    )
    started = time.perf_counter()
    results = tuner.fit()
    ended = time.perf_counter()
    if results.num_errors:
        raise RuntimeError(f"{results.num_errors} trial(s) failed: {results.errors}")
    return _row(
        [clock.trial() for clock in clocks.values()],
        wall=ended - started,
        concurrency=concurrency,
        launch=min(clock.added for clock in clocks.values()) - started,
        driver_end=ended - max(clock.completed for clock in clocks.values()),
    )


# -- rows -------------------------------------------------------------------


def _mean(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.fmean(present) if present else None


def _first_epoch_extra(epochs: Sequence[tuple[int, float]]) -> float | None:
    """Epoch 1's time minus the mean of its phase's other epochs (None if it has none)."""
    first_phase = [seconds for phase, seconds in epochs if phase == epochs[0][0]]
    if len(first_phase) < 2:
        return None
    return first_phase[0] - statistics.fmean(first_phase[1:])


def _by_process(trials: Sequence[_Trial]) -> dict[str, Any]:
    """Overhead per trial apart for the trials that started a new process (each
    process's first, in the order Tune added them) and for those that reused one.

    With actors reused, the first kind pays the imports once per slot and the second
    shows what a trial costs on a warm slot; at any length of search the overhead per
    trial is between the two.
    """
    seen: set[int] = set()
    new, reused = [], []
    for trial in trials:
        if trial.process is None:
            continue
        (reused if trial.process in seen else new).append(trial.wall - trial.total)
        seen.add(trial.process)
    return {
        "new_process_trials": len(new),
        "overhead_new_process_s": _mean(new),
        "reused_process_trials": len(reused),
        "overhead_reused_process_s": _mean(reused),
    }


def _row(
    trials: Sequence[_Trial],
    *,
    wall: float,
    concurrency: int,
    launch: float,
    driver_end: float,
) -> dict[str, Any]:
    """One variant's row: its own times, and its trials' summed or averaged."""
    return {
        "trials": len(trials),
        "concurrency": concurrency,
        "wall_s": wall,
        "train_s": sum(seconds for t in trials for _, seconds in t.epochs),
        "overhead_per_trial_s": _mean([t.wall - t.total for t in trials]),
        **{name: _mean([t.metrics[name] for t in trials]) for name in COMPARED},
        "launch_s": launch,
        "actor_start_s": _mean([t.actor_start for t in trials]),
        "setup_s": _mean([t.setup for t in trials]),
        "phase_setup_s": _mean([t.phase_setup for t in trials]),
        "report_per_epoch_s": _mean([t.report for t in trials]),
        "first_epoch_extra_s": _mean([_first_epoch_extra(t.epochs) for t in trials]),
        "end_s": _mean([t.end for t in trials]),
        "driver_end_s": driver_end,
        "tune_minus_engine_s": _mean([t.tune_minus_engine for t in trials]),
        "idle_per_slot_s": wall - sum(t.wall for t in trials) / concurrency,
        "trial_wall_s": _mean([t.wall for t in trials]),
        **_by_process(trials),
    }


def run(
    trials: int = 8,
    epochs: int = 6,
    samples: int = 2400,
    scale: float = 1.0,
    tiny: bool = False,
    ddp_trials: int = 2,
    reuse_actors: bool = True,
) -> dict[str, dict[str, Any]]:
    """Run the variants; return a row of times (seconds) and final metrics per variant.

    tune_2_workers trains the first ``ddp_trials`` of the trials (0: not at all): its
    cost is starting a worker group per trial, which a few trials show as well as many.
    Ray is started for the Tune variants unless one runs already; tune_1_worker's
    ``ray_start_s`` is what starting it took (None when one was running).
    """
    import ray

    from search.ray_runtime import configure_runtime, ray_running
    from trainables.launch import plan_for_trial
    from trainables.models import ensure_pretrained

    configure_runtime()
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="phasetune-overhead-") as root:
        config = experiment(samples, scale, tiny, root)
        context = config.plan_context()
        configs = trial_configs(trials, epochs, config.model.num_groups)
        plans = [plan_for_trial(trial, context) for trial in configs]
        # Made, or read from the cache, before any variant is timed.
        load_dataset(context.data)
        ensure_pretrained(context.model)
        rows["plain"] = _plain_variant(plans)
        running = ray.is_initialized()
        starting = time.perf_counter()
        with ray_running():
            ray_start = None if running else time.perf_counter() - starting
            rows["tune_1_worker"] = _tune_variant(config, configs, 1, Path(root), reuse_actors)
            rows["tune_1_worker"]["ray_start_s"] = ray_start
            if ddp_trials > 0:
                rows["tune_2_workers"] = _tune_variant(
                    config, configs[:ddp_trials], 2, Path(root), reuse_actors
                )
    # Per trial, as tune_2_workers may train fewer; each variant uses both cores.
    plain_per_trial = rows["plain"]["wall_s"] / rows["plain"]["trials"]
    for row in rows.values():
        row["wall_vs_plain"] = row["wall_s"] / row["trials"] / plain_per_trial
        # A trial's share of the wall time is wall x slots / trials (slot-seconds):
        # this is what a trial costs over plain's, each side's process starts and
        # idle slots included, where overhead/trial counts only the trial's own wall.
        row["over_plain_per_trial_s"] = (row["wall_s"] / row["trials"] - plain_per_trial) * SLOTS
    return rows


# -- the report -------------------------------------------------------------


def _cell(value: float | None, width: int, digits: int = 2) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def report(rows: dict[str, dict[str, Any]], epochs: int) -> str:
    """The summary table, the breakdown table, and tune_1_worker's cost per trial."""
    lines = [
        f"{'variant':<15} {'slots':>5} {'wall s':>8} {'train s':>8} {'overhead/trial s':>16}"
        f" {'vs plain':>10} {'over plain/trial s':>18} {'val/loss':>8} {'val/acc':>8}"
    ]
    for name, row in rows.items():
        lines.append(
            f"{name:<15} {row['concurrency']:>5} {_cell(row['wall_s'], 8, 1)}"
            f" {_cell(row['train_s'], 8, 1)} {_cell(row['overhead_per_trial_s'], 16)}"
            f" {_cell(row['wall_vs_plain'], 9)}x {_cell(row['over_plain_per_trial_s'], 18)}"
            f" {_cell(row['val/loss'], 8, 4)}"
            f" {_cell(row['val/acc'], 8, 3)}"
        )
    columns = (
        ("launch", "launch_s"),
        ("actor start", "actor_start_s"),
        ("setup", "setup_s"),
        ("phase setup", "phase_setup_s"),
        ("report/epoch", "report_per_epoch_s"),
        ("1st ep extra", "first_epoch_extra_s"),
        ("end", "end_s"),
        ("driver end", "driver_end_s"),
        ("Tune-engine", "tune_minus_engine_s"),
        ("idle/slot", "idle_per_slot_s"),
    )
    lines += [
        "",
        "where the time goes, s (launch, driver end, idle/slot: per variant; the rest: mean"
        " per trial)",
        f"{'variant':<15}" + "".join(f" {title:>12}" for title, _ in columns),
    ]
    for name, row in rows.items():
        lines.append(f"{name:<15}" + "".join(f" {_cell(row[key], 12)}" for _, key in columns))
    tuned, plain = rows["tune_1_worker"], rows["plain"]
    ray_start = tuned["ray_start_s"]
    lines += [
        "",
        "Ray start (once): "
        + (f"{ray_start:.1f} s" if ray_start is not None else "reused a running Ray"),
    ]
    if tuned["new_process_trials"]:
        lines.append(
            f"tune_1_worker's overhead per trial: {tuned['overhead_new_process_s']:.2f} s in"
            f" the {tuned['new_process_trials']} that started a new process"
            + (
                f", {tuned['overhead_reused_process_s']:.2f} s in the"
                f" {tuned['reused_process_trials']} that reused one"
                if tuned["reused_process_trials"]
                else " (none reused one)"
            )
        )
    parts = {
        "actor start": tuned["actor_start_s"],
        "setup": tuned["setup_s"] - plain["setup_s"],
        "phase setup": tuned["phase_setup_s"] - plain["phase_setup_s"],
        f"{epochs - 1} reports": (tuned["report_per_epoch_s"] or 0.0) * (epochs - 1),
        "epochs": (tuned["train_s"] - plain["train_s"]) / tuned["trials"],
        "end": tuned["end_s"],
    }
    lines.append(
        f"tune_1_worker's trial over plain's: {sum(parts.values()):+.2f} s = "
        + ", ".join(f"{name} {value:+.2f}" for name, value in parts.items())
        + f" (trial walls: {tuned['trial_wall_s'] - plain['trial_wall_s']:+.2f} s)"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=6, help="per trial (progressive from 3)")
    parser.add_argument("--samples", type=int, default=2400, help="data set size (--tiny: 360)")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="model width x this (1: the quickstart's 16)"
    )
    parser.add_argument(
        "--ddp-trials",
        type=int,
        default=2,
        help="how many of the trials the 2-worker variant trains (0: skip it)",
    )
    parser.add_argument("--no-ddp", action="store_true", help="skip the 2-worker variant")
    parser.add_argument("--tiny", action="store_true", help="smallest size (smoke test)")
    parser.add_argument(
        "--no-reuse-actors",
        dest="reuse_actors",
        action="store_false",
        help="a new Tune actor per trial (Tune's default) instead of the search's reuse",
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows = run(
        args.trials,
        args.epochs,
        args.samples,
        args.scale,
        args.tiny,
        0 if args.no_ddp else args.ddp_trials,
        args.reuse_actors,
    )
    print(report(rows, args.epochs))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
