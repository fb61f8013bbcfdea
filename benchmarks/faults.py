"""Faults injected into small real searches: which ones the search survives, counted.

Each fault runs a 2-trial search (the progressive and single-phase baselines, 2+2+2
and 3 epochs, fixed parameters) with ``phasetune run`` in a subprocess joined to one
local Ray. The network comes from ``benchmarks/fault_network.py`` through
``model.factory``, and fails at one point of the first trial: it writes a marker and
waits there, so every kill lands at a point this script observes, never at a guess.

    python benchmarks/faults.py                          # every fault, 10 times each
    python benchmarks/faults.py --repeat 3 --faults ddp_worker_mid_epoch --json out.json

A run **survived** when all of these hold:
- the search (and ``phasetune resume``, where the fault needs one) ended by itself
  within ``BOUND_S`` seconds;
- every configured trial is present exactly once;
- each trial's epochs only go forward, with at most the epoch in flight repeated, and
  its phases stay in order;
- the Optuna study holds no trial left RUNNING and exactly one per configured trial;
- the recovered trial's final val/acc and val/loss equal those of the same search run
  without the fault: exactly for 1-worker trials, within ``DDP_TOLERANCE`` under DDP,
  where the restarted group's gloo all-reduce may sum in another order;
- for ``user_error``: the trial is ``failed`` with the error's last line, the other
  trial finished.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
#: A search with its resume must end within this; past it the run counts as hung.
BOUND_S = 300.0
#: Final metrics of a recovered DDP trial against the uninterrupted run.
DDP_TOLERANCE = 1e-4
#: Training samples per epoch: 30 steps of 32 in one process, 15 per rank under DDP.
TRAIN_SAMPLES = 960
BATCH = 32


@dataclasses.dataclass(frozen=True)
class Fault:
    """One fault: where the network fails, and what the script then kills.

    Attributes:
        workers: Workers of each trial (2: a DDP worker group under Ray Train).
        network: ``fault_network.build`` keywords (``fault``, ``at_step``, ``rank``).
        kill: ``armed`` (the process the marker names), ``driver`` (``phasetune run``,
            then ``phasetune resume``) or ``none``.
        driver_fault: Set in the driver's environment for ``driver_shim`` (a fault in
            the driver itself rather than in the network).
        truncate: Before the resume, cut the newest checkpoint of the first trial in half.
    """

    workers: int
    network: dict[str, Any]
    kill: str
    driver_fault: str | None = None
    truncate: bool = False

    @property
    def steps_per_epoch(self) -> int:
        return -(-(TRAIN_SAMPLES // self.workers) // BATCH)


def _step(workers: int, epoch: int, fraction: float) -> int:
    """The training step (from 1) ``fraction`` into ``epoch`` (from 1) of one process."""
    per_epoch = -(-(TRAIN_SAMPLES // workers) // BATCH)
    return (epoch - 1) * per_epoch + max(1, round(per_epoch * fraction))


FAULTS: dict[str, Fault] = {
    # A DDP worker killed in the middle of epoch 4 (phase 2 of 2+2+2).
    "ddp_worker_mid_epoch": Fault(
        2, {"fault": "block_step", "at_step": _step(2, 4, 0.5), "rank": 1}, "armed"
    ),
    # A DDP worker killed after phase 1's last report, at phase 2's first step.
    "ddp_worker_at_phase_boundary": Fault(
        2, {"fault": "block_step", "at_step": _step(2, 3, 0.0), "rank": 1}, "armed"
    ),
    # The process of an in-process (1-worker) trial killed mid-epoch; max_failures 1.
    "trial_process": Fault(1, {"fault": "block_step", "at_step": _step(1, 4, 0.5)}, "armed"),
    # The driver killed while the trial writes its epoch-3 checkpoint; then resume.
    "driver_mid_checkpoint": Fault(
        1, {"fault": "block_checkpoint", "at_step": _step(1, 3, 1.0)}, "driver"
    ),
    # The driver killed while it writes the first finished trial to the Optuna study.
    "driver_mid_study_write": Fault(1, {"fault": "none"}, "driver", driver_fault="study"),
    # The driver killed mid-epoch 5; the trial's newest checkpoint is then truncated.
    "truncated_checkpoint": Fault(
        1, {"fault": "block_step", "at_step": _step(1, 5, 0.5)}, "driver", truncate=True
    ),
    # A bug in the user's network raises in epoch 1: that trial fails, the search goes on.
    "user_error": Fault(1, {"fault": "raise_step", "at_step": _step(1, 1, 0.5)}, "none"),
}


def experiment(name: str, root: Path, control: Path, fault: Fault) -> dict[str, Any]:
    """The experiment file of one run (``fault`` None: the run without a fault)."""
    return {
        "name": name,
        "dataset": {
            "kind": "synthetic_signs",
            "num_samples": TRAIN_SAMPLES * 5 // 4,
            "image_size": 16,
            "num_classes": 6,
            "val_fraction": 0.2,
        },
        "model": {
            "backbone": "factory",
            "factory": "fault_network:build",
            "factory_args": {"width": 4, "control": str(control), **fault.network},
            "blocks": "features",
            "num_groups": 4,
            "pretrain": {"enabled": False},
        },
        "strategies": {
            "progressive": {
                "space": {
                    "frozen_epochs": 2,
                    "partial_epochs": 2,
                    "full_epochs": 2,
                    "unfreeze_depth": 2,
                    "batch_size": BATCH,
                }
            },
            "single_phase": {
                "space": {"epochs": 3, "early_stopping_patience": 0, "batch_size": BATCH}
            },
        },
        "search": {
            "num_samples": 2,
            "scheduler": "fifo",
            "seed": 0,
            "max_concurrent_trials": 1,
        },
        "resources": {
            "workers_per_trial": fault.workers,
            "cpus_per_worker": 1,
            "max_failures": 1,
        },
        "storage": {"path": str(root)},
    }


@dataclasses.dataclass
class Outcome:
    survived: bool
    reason: str
    seconds: float
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    #: Largest difference of a final metric from the run without the fault.
    deviation: float | None = None


def _environment(driver_fault: str | None, control: Path) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(HERE)]
    if driver_fault:
        # sitecustomize in driver_shim/ patches the driver only: Ray's workers start
        # from the cluster's environment, not this one.
        paths.insert(0, str(HERE / "driver_shim"))
        env["PHASETUNE_DRIVER_FAULT"] = f"{driver_fault}:{control}"
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    return env


def _phasetune(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("a") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "search", *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen, deadline: float) -> bool:
    """Poll ``condition`` until it holds; False once ``process`` exits or time runs out."""
    while time.monotonic() < deadline:
        if condition():
            return True
        try:
            process.wait(timeout=0.05)  # returns at once when the process ends
        except subprocess.TimeoutExpired:
            continue
        return condition()
    return False


def _finish(process: subprocess.Popen, deadline: float) -> int | None:
    """The exit status, or None (after killing it) if it runs past ``deadline``."""
    try:
        return process.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


def run_one(name: str, fault: Fault | None, workdir: Path, armed: bool = True) -> Outcome:
    """One search with ``fault`` (None: without one); checks what the search left."""
    started = time.monotonic()
    deadline = started + BOUND_S
    root, control = workdir / "results", workdir / "control"
    root.mkdir(parents=True, exist_ok=True)
    spec = (
        fault
        if fault is not None and armed
        else dataclasses.replace(
            fault or FAULTS["trial_process"], network={"fault": "none"}, driver_fault=None
        )
    )
    path = workdir / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment("fault", root, control, spec)))
    log = workdir / "log.txt"
    env = _environment(spec.driver_fault, control)
    run = _phasetune(["run", str(path)], env, log)
    marker = control / "armed.json"
    if spec.kill != "none" and fault is not None and armed:
        if not _wait_for(marker.exists, run, deadline):
            _finish(run, started)
            return _outcome(False, "the fault never armed", started, log)
        pid = json.loads(marker.read_text())["pid"]
        os.kill(run.pid if spec.kill == "driver" else pid, signal.SIGKILL)
    status = _finish(run, deadline)
    if spec.kill == "driver" and armed:
        if status is None:
            return _outcome(False, "the killed driver did not exit", started, log)
        if spec.truncate:
            cut = _truncate_newest_checkpoint(root / "fault" / "tune")
            if cut is None:
                return _outcome(False, "no checkpoint to truncate", started, log)
        resume = _phasetune(["resume", str(root / "fault")], _environment(None, control), log)
        status = _finish(resume, deadline)
        if spec.truncate and "falls back" not in log.read_text():
            return _outcome(False, "the resume did not say it fell back", started, log)
    if status is None:
        return _outcome(False, f"still running after {BOUND_S:.0f} s", started, log)
    if status != 0:
        return _outcome(False, f"exit status {status}", started, log)
    return check(root / "fault", fault if armed else None, started, log)


def _outcome(survived: bool, reason: str, started: float, log: Path) -> Outcome:
    if not survived:
        tail = log.read_text().strip().splitlines()[-3:] if log.exists() else []
        reason = f"{reason} | {' / '.join(tail)}"
    return Outcome(survived, reason, time.monotonic() - started)


def _truncate_newest_checkpoint(tune_dir: Path) -> Path | None:
    files = sorted(tune_dir.glob("*/checkpoint_*/state.pt"), key=lambda p: p.parent.name)
    if not files:
        return None
    newest = files[-1]
    size = newest.stat().st_size
    with newest.open("r+b") as handle:
        handle.truncate(size // 2)
    return newest


def check(directory: Path, fault: Fault | None, started: float, log: Path) -> Outcome:
    """The survival checks of the module's docstring on a finished experiment."""
    import optuna

    from analysis.results import load_results

    tables = load_results(str(directory))
    trials = tables.trials.to_pylist()
    if sorted(t["strategy"] for t in trials) != ["progressive", "single_phase"]:
        return _outcome(False, f"trials {[t['strategy'] for t in trials]}", started, log)
    for trial_dir in (directory / "tune").iterdir():
        lines = (
            (trial_dir / "result.json").read_text().splitlines()
            if (trial_dir / "result.json").exists()
            else []
        )
        rows = [json.loads(line) for line in lines if line.strip()]
        epochs = [row["epoch"] for row in rows]
        phases = [row["phase"] for row in rows]
        if epochs != sorted(epochs) or len(epochs) - len(set(epochs)) > 1:
            return _outcome(False, f"{trial_dir.name}: epochs {epochs}", started, log)
        if phases != sorted(phases):
            return _outcome(False, f"{trial_dir.name}: phases {phases}", started, log)
    study = optuna.load_study(study_name="fault", storage=f"sqlite:///{directory / 'study.db'}")
    states = [t.state.name for t in study.trials]
    if "RUNNING" in states or len(states) != 2:
        return _outcome(False, f"study trials {states}", started, log)
    progressive = next(t for t in trials if t["strategy"] == "progressive")
    other = next(t for t in trials if t["strategy"] == "single_phase")
    metrics = {
        k: progressive[f"final/{k}"]
        for k in ("val/acc", "val/loss")
        if progressive.get(f"final/{k}") is not None
    }
    if fault is not None and fault.network.get("fault") == "raise_step":
        failed = progressive["status"] == "failed" and "a bug in the user's network" in (
            progressive["error"] or ""
        )
        if not failed or other["status"] != "done" or states.count("FAIL") != 1:
            return _outcome(False, f"user error recorded as {progressive['status']}", started, log)
        return Outcome(True, "", time.monotonic() - started, metrics)
    if any(t["status"] != "done" for t in trials):
        return _outcome(False, f"statuses {[t['status'] for t in trials]}", started, log)
    return Outcome(True, "", time.monotonic() - started, metrics)


def _same(metrics: dict[str, float], reference: dict[str, float], tolerance: float) -> bool:
    return set(metrics) == set(reference) and all(
        math.isclose(metrics[k], reference[k], rel_tol=tolerance, abs_tol=tolerance)
        if tolerance
        else metrics[k] == reference[k]
        for k in reference
    )


def reference(workers: int, workdir: Path) -> dict[str, float]:
    """Final val/acc and val/loss of the progressive trial without a fault."""
    shape = FAULTS["ddp_worker_mid_epoch" if workers > 1 else "trial_process"]
    outcome = run_one("reference", shape, workdir / f"reference-{workers}", armed=False)
    if not outcome.survived:
        raise RuntimeError(f"the run without a fault failed: {outcome.reason}")
    return outcome.metrics


def attempt(name: str, workdir: Path, uninterrupted: dict[str, float]) -> Outcome:
    """One run of fault ``name``, its final metrics compared with ``uninterrupted``."""
    fault = FAULTS[name]
    outcome = run_one(name, fault, workdir)
    tolerance = DDP_TOLERANCE if fault.workers > 1 else 0.0
    compared = outcome.survived and fault.network.get("fault") != "raise_step"
    if not compared:
        return outcome
    deviation = max(
        (abs(outcome.metrics[k] - v) for k, v in uninterrupted.items() if k in outcome.metrics),
        default=math.inf,
    )
    outcome = dataclasses.replace(outcome, deviation=deviation)
    if not _same(outcome.metrics, uninterrupted, tolerance):
        return dataclasses.replace(
            outcome,
            survived=False,
            reason=f"final {outcome.metrics} != uninterrupted {uninterrupted}",
        )
    return outcome


@contextmanager
def joined_ray() -> Iterator[None]:
    """A Ray the searches join (``RAY_ADDRESS``): this process's if it has one (its
    workers must import ``fault_network``: the tests' Ray has this folder on their
    path), else a local one started here for all of them, which saves a start per run."""
    import ray

    from search.ray_runtime import configure_runtime

    started = not ray.is_initialized()
    if started:
        configure_runtime()
        # Ray's workers start from the environment of the process that starts Ray:
        # this is how they import fault_network by name.
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        # The dashboard serves the state API, which Ray Train's placement-group cleaner polls.
        ray.init(
            num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", logging_level="WARNING"
        )
    before = os.environ.get("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = before
        if started:
            ray.shutdown()


def run(names: list[str], repeat: int, workdir: Path) -> dict[str, dict[str, Any]]:
    """Every fault of ``names`` ``repeat`` times; survived/tried with each failure's reason."""
    with joined_ray():
        uninterrupted = {w: reference(w, workdir) for w in {FAULTS[n].workers for n in names}}
        table: dict[str, dict[str, Any]] = {}
        for name in names:
            survived, failures, seconds, deviations = 0, [], [], []
            for number in range(repeat):
                folder = workdir / f"{name}-{number}"
                outcome = attempt(name, folder, uninterrupted[FAULTS[name].workers])
                survived += outcome.survived
                seconds.append(outcome.seconds)
                if outcome.deviation is not None:
                    deviations.append(outcome.deviation)
                if outcome.survived:
                    shutil.rmtree(folder, ignore_errors=True)
                else:
                    failures.append(outcome.reason)
                verdict = "survived" if outcome.survived else f"FAILED: {outcome.reason}"
                print(
                    f"{name} {number + 1}/{repeat} ({outcome.seconds:.0f} s): {verdict}", flush=True
                )
            table[name] = {
                "survived": survived,
                "tried": repeat,
                "max_seconds": round(max(seconds), 1),
                "max_deviation": max(deviations) if deviations else None,
                "failures": failures,
            }
        return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--faults", default=",".join(FAULTS), help="comma-separated names")
    parser.add_argument("--json", type=Path, help="also write {fault: {survived, tried}}")
    parser.add_argument("--keep", type=Path, help="keep every run's folder here")
    args = parser.parse_args()
    names = [n for n in args.faults.split(",") if n]
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        parser.error(f"--faults: unknown {', '.join(unknown)}; use {', '.join(FAULTS)}")
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="phasetune-faults-"))
    table = run(names, args.repeat, workdir)
    print(f"\n{'fault':<30} survived/tried  longest run (bound {BOUND_S:.0f} s)  final metrics")
    for name, row in table.items():
        counts = f"{row['survived']:>3}/{row['tried']:<3}"
        deviation = row["max_deviation"]
        shown = "-" if deviation is None else "exact" if deviation == 0 else f"{deviation:.1e} off"
        print(f"{name:<30} {counts}         {row['max_seconds']:>5.0f} s                 {shown}")
    if args.json:
        counts = {k: {"survived": v["survived"], "tried": v["tried"]} for k, v in table.items()}
        args.json.write_text(json.dumps(counts, indent=2) + "\n")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
