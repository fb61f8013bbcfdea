"""Samples/s of one phasetune trial vs a hand-written bf16 loop; GPU use of shared GPUs.

One trial is the phase engine run in-process (``EngineContext(use_gpu=True)``), as a
1-worker trial runs it, on a single-phase plan (every layer trains every epoch) of the
quickstart's model, data and batch size, in fp32 and under bf16 autocast
(``resources.precision``; "auto", the default, is bf16 on GPUs that support it). On a
GPU the engine holds small data sets in GPU memory and uses channels-last. The
hand-written loops train the same model (``build_model`` of the same spec) on the same
data and batch size with the data resident on the device and a fused AdamW, in fp32
and under bf16 autocast, so each engine row has a hand-written row to compare with. Each
epoch is timed as the engine times it (one training pass plus one validation pass);
samples/s is training samples per epoch over the median epoch after the first
(warm-up), and end-to-end also counts building the model, data and checkpoints.

Then 1, 2 and 4 Tune trials run the real trial driver at once with ``{"GPU": 1/n}``
each, while a sampler reads the GPU's utilisation (``torch.cuda.utilization()``, or
``nvidia-smi`` without pynvml) from the first reported epoch to the last.

Without a CUDA GPU the script prints one line and exits 0. ``--device cpu`` runs the
samples/s comparison on the CPU (no sharing part).

    python benchmarks/gpu_throughput.py                      # quickstart size, 5 epochs
    python benchmarks/gpu_throughput.py --samples 9600 --epochs 10
    python benchmarks/gpu_throughput.py --device cpu --tiny  # the smoke test's size
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
from ray import tune
from torch import nn

from search.config import ExperimentConfig, load_experiment
from trainables.data import load_dataset
from trainables.engine import EngineContext, run_plan
from trainables.models import build_model
from trainables.phases import PhasePlan
from trainables.strategies import PlanContext, build_plan

#: Trials sharing one GPU, each holding 1/n of it.
SHARES = (1, 2, 4)


@dataclasses.dataclass(frozen=True)
class Rate:
    """Throughput of one way of training the plan."""

    name: str
    samples_per_s: float
    end_to_end_per_s: float
    val_acc: float


@dataclasses.dataclass(frozen=True)
class Sharing:
    """``trials`` trials training at once on one GPU."""

    trials: int
    per_trial_per_s: float
    total_per_s: float
    gpu_util_percent: float | None


def benchmark_plan(config: ExperimentConfig, samples: int, epochs: int, tiny: bool) -> PhasePlan:
    """The quickstart's single-phase baseline at ``epochs`` epochs on ``samples`` images.

    No pretrained backbone (weights do not change the cost of a step) and no early
    stopping, so every run trains every epoch.
    """
    data = dataclasses.replace(config.data_spec(), num_samples=samples)
    model = dataclasses.replace(config.model_spec(), pretrained=None)
    if tiny:
        data = dataclasses.replace(data, num_samples=360, image_size=16, num_classes=6)
        model = dataclasses.replace(model, width=4)
    context = PlanContext(model=model, data=data, seed=config.search.seed)
    return build_plan("single_phase", trial_params(config, epochs), context)


def trial_params(config: ExperimentConfig, epochs: int) -> dict[str, Any]:
    """The single-phase baseline's parameters, at ``epochs`` epochs without early stopping."""
    space = next(s for s in config.search_space().strategies if s.strategy == "single_phase")
    return {**space.baselines[0].params, "epochs": epochs, "early_stopping_patience": 0}


class _Recorder:
    """Keeps every epoch's metrics in memory (the engine's reporter interface)."""

    rank = 0
    world_size = 1

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        self.history.append(dict(metrics))

    def restore(self) -> None:
        return None


def _steady(epoch_seconds: list[float]) -> float:
    """Median epoch time, leaving out the first (allocator, cuDNN and cache warm-up)."""
    return statistics.median(epoch_seconds[1:] if len(epoch_seconds) > 1 else epoch_seconds)


def engine_rate(plan: PhasePlan, device: str, bf16: bool) -> Rate:
    """The phase engine as a 1-worker trial runs it."""
    train_samples = len(load_dataset(plan.data).train)
    recorder = _Recorder()
    started = time.perf_counter()
    precision = "bf16" if bf16 else "fp32"
    run_plan(plan, EngineContext(use_gpu=device == "cuda", precision=precision), recorder)
    wall = time.perf_counter() - started
    epoch_seconds = [metrics["time/epoch_s"] for metrics in recorder.history]
    return Rate(
        name=f"phasetune engine {'bf16 autocast' if bf16 else 'fp32'}",
        samples_per_s=train_samples / _steady(epoch_seconds),
        end_to_end_per_s=train_samples * len(epoch_seconds) / wall,
        val_acc=recorder.history[-1]["val/acc"],
    )


def hand_rate(plan: PhasePlan, device: str, bf16: bool) -> Rate:
    """A plain loop over the same model, data and batch size, data held on the device."""
    started = time.perf_counter()
    target = torch.device(device)
    torch.manual_seed(plan.seed)
    data = load_dataset(plan.data)
    train_x, train_y = data.train.images.to(target), data.train.labels.to(target)
    val_x, val_y = data.val.images.to(target), data.val.labels.to(target)
    model = build_model(plan.model, data.num_classes, ("cls",)).to(target)
    phase = plan.phases[0]
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=phase.lr,
        weight_decay=plan.weight_decay,
        fused=target.type == "cuda",
    )
    epoch_seconds, correct = [], 0
    for _ in range(phase.epochs):
        _synchronize(target)
        epoch_started = time.perf_counter()
        model.train()
        order = torch.randperm(len(train_x), device=target)
        for start in range(0, len(order), plan.batch_size):
            batch = order[start : start + plan.batch_size]
            with torch.autocast(target.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(train_x[batch], ("cls",))["cls"]
            loss = nn.functional.cross_entropy(logits.float(), train_y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        hits = torch.zeros((), dtype=torch.long, device=target)
        with torch.no_grad(), torch.autocast(target.type, dtype=torch.bfloat16, enabled=bf16):
            for start in range(0, len(val_x), 256):
                logits = model(val_x[start : start + 256], ("cls",))["cls"]
                hits += (logits.argmax(1) == val_y[start : start + 256]).sum()
        # Reading the count waits for the device, so the epoch's time is complete.
        correct = int(hits)
        epoch_seconds.append(time.perf_counter() - epoch_started)
    wall = time.perf_counter() - started
    return Rate(
        name=f"hand-written {'bf16 autocast' if bf16 else 'fp32'}",
        samples_per_s=len(train_x) / _steady(epoch_seconds),
        end_to_end_per_s=len(train_x) * phase.epochs / wall,
        val_acc=correct / len(val_x),
    )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare(plan: PhasePlan, device: str) -> list[Rate]:
    """The engine and the hand-written loop, each in fp32 and under bf16 autocast."""
    return [
        engine_rate(plan, device, False),
        hand_rate(plan, device, False),
        engine_rate(plan, device, True),
        hand_rate(plan, device, True),
    ]


def gpu_utilization() -> float | None:
    """The GPU's utilisation in percent over NVML's last sample period, or None if unknown."""
    try:
        return float(torch.cuda.utilization())
    except Exception:  # noqa: BLE001 - no pynvml, or NVML refused: ask nvidia-smi instead
        pass
    if shutil.which("nvidia-smi") is None:
        return None
    query = [
        "nvidia-smi",
        "--query-gpu=utilization.gpu",
        "--format=csv,noheader,nounits",
        "-i",
        "0",
    ]
    try:
        return float(subprocess.run(query, capture_output=True, text=True, check=True).stdout)
    except (subprocess.CalledProcessError, ValueError):
        return None


class _UtilisationSampler:
    """Reads the GPU's utilisation every ``period`` seconds in a thread, with timestamps."""

    def __init__(self, period: float = 0.2) -> None:
        self.period = period
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> _UtilisationSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self.period):
            value = gpu_utilization()
            if value is not None:
                self.samples.append((time.monotonic(), value))

    def mean(self, start: float, end: float) -> float | None:
        inside = [value for at, value in self.samples if start <= at <= end]
        return statistics.fmean(inside) if inside else None


class EpochTimes(tune.Callback):
    """When each trial reported each epoch, and how long the epoch took."""

    def __init__(self) -> None:
        self.reports: dict[str, list[tuple[float, float]]] = {}

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        self.reports.setdefault(trial.trial_id, []).append(
            (time.monotonic(), result["time/epoch_s"])
        )

    def window(self) -> tuple[float, float]:
        """From the first epoch every trial has reported to the last epoch of the first
        trial to finish: while all of them train (else from first to last report)."""
        firsts = [reports[0][0] for reports in self.reports.values()]
        lasts = [reports[-1][0] for reports in self.reports.values()]
        if max(firsts) < min(lasts):
            return max(firsts), min(lasts)
        return min(firsts), max(lasts)


def share_gpu(count: int, config: ExperimentConfig, plan: PhasePlan, epochs: int) -> Sharing:
    """``count`` Tune trials of the real trial driver at once, each on 1/count of a GPU."""
    from search.experiment import _result_loggers
    from trainables.launch import LaunchSettings, tune_trainable

    context = PlanContext(model=plan.model, data=plan.data, seed=plan.seed)
    settings = LaunchSettings(
        plan_context=context, targets=config.target_list(), gpus_per_worker=1 / count
    )
    times = EpochTimes()
    train_samples = len(load_dataset(plan.data).train)
    with tempfile.TemporaryDirectory(prefix="phasetune-gpu-") as root, _UtilisationSampler() as gpu:
        tuner = tune.Tuner(
            tune_trainable(settings),
            param_space={"strategy": "single_phase", "single_phase": trial_params(config, epochs)},
            tune_config=tune.TuneConfig(num_samples=count, max_concurrent_trials=count),
            run_config=tune.RunConfig(
                storage_path=root, callbacks=[times, *_result_loggers()], verbose=0
            ),
        )
        results = tuner.fit()
    if results.errors:
        raise RuntimeError(f"{len(results.errors)} of {count} GPU-sharing trials failed")
    rates = [
        train_samples / _steady([seconds for _, seconds in reports])
        for reports in times.reports.values()
    ]
    return Sharing(
        trials=count,
        per_trial_per_s=statistics.fmean(rates),
        total_per_s=sum(rates),
        gpu_util_percent=gpu.mean(*times.window()),
    )


def run(
    device: str = "cuda",
    tiny: bool = False,
    samples: int = 2400,
    epochs: int = 5,
    shares: tuple[int, ...] = SHARES,
) -> dict[str, Any]:
    """The samples/s comparison on ``device``; on CUDA also the GPU-sharing runs."""
    from search.ray_runtime import configure_runtime, ray_running

    configure_runtime()
    config = load_experiment(None)
    plan = benchmark_plan(config, samples, epochs, tiny)
    outcome: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "plan": {
            "width": plan.model.width,
            "batch_size": plan.batch_size,
            "train_samples": len(load_dataset(plan.data).train),
            "epochs": epochs,
        },
        "rates": compare(plan, device),
        "sharing": [],
    }
    if device == "cuda":
        with ray_running():
            outcome["sharing"] = [share_gpu(n, config, plan, epochs) for n in shares]
    return outcome


def format_report(outcome: dict[str, Any]) -> str:
    plan = outcome["plan"]
    rates: list[Rate] = outcome["rates"]
    width = max(len(rate.name) for rate in rates)
    lines = [
        f"{outcome['device']}: small_cnn width {plan['width']}, batch {plan['batch_size']},"
        f" {plan['train_samples']} training samples, {plan['epochs']} epochs",
        f"{'loop':<{width}} {'samples/s':>10} {'end-to-end':>11} {'val acc':>8}",
    ]
    for rate in rates:
        lines.append(
            f"{rate.name:<{width}} {rate.samples_per_s:>10.0f} {rate.end_to_end_per_s:>11.0f}"
            f" {rate.val_acc:>8.3f}"
        )
    engine, loop, engine_bf16, loop_bf16 = rates
    lines.append(
        f"engine / loop samples/s: fp32 {engine.samples_per_s / loop.samples_per_s:.2f}x,"
        f" bf16 {engine_bf16.samples_per_s / loop_bf16.samples_per_s:.2f}x"
    )
    if outcome["sharing"]:
        lines.append(
            f"{'trials on 1 GPU':<16} {'samples/s per trial':>20} {'total':>10} {'GPU util %':>11}"
        )
        for share in outcome["sharing"]:
            util = "-" if share.gpu_util_percent is None else f"{share.gpu_util_percent:.0f}"
            lines.append(
                f"{share.trials:<16} {share.per_trial_per_s:>20.0f} {share.total_per_s:>10.0f}"
                f" {util:>11}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--samples", type=int, default=2400, help="data set size (quickstart's)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="tiny data and model (smoke test)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_throughput: no CUDA GPU here (torch.cuda.is_available() is False); skipped")
        return
    outcome = run(args.device, args.tiny, args.samples, args.epochs)
    print(format_report(outcome))
    if args.json:
        serialisable = {
            **outcome,
            "rates": [dataclasses.asdict(rate) for rate in outcome["rates"]],
            "sharing": [dataclasses.asdict(share) for share in outcome["sharing"]],
        }
        args.json.write_text(json.dumps(serialisable, indent=2) + "\n")


if __name__ == "__main__":
    main()
