"""Benchmarks are scripts, not tests; these run each at its smallest size so none rots."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    # A benchmark imports its sibling modules by name, as it does when run as a script.
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    # Their dataclasses look their module up by name.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_early_stopping_benchmark_runs_at_the_smallest_size(ray_session):
    rows = _load("early_stopping").run(trials=2, epoch_scale=0.1, samples=360, seed=0, tiny=True)
    assert set(rows) == {"fifo", "asha", "strategy_asha", "phase_asha"}
    for row in rows.values():
        assert row["epochs"] >= 1
        assert row["fifo_winner_status"] != "not sampled"  # same recipes under every scheduler


def test_overhead_benchmark_runs_and_its_variants_train_alike(ray_session):
    # Imported by name, not from its file: the plain variant's pool processes import
    # the module by that name to run a trial.
    overhead = importlib.import_module("benchmarks.overhead")
    rows = overhead.run(trials=2, epochs=1, samples=360, tiny=True, ddp_trials=1)
    variants = ("plain", "tune_1_worker", "tune_2_workers")
    assert tuple(rows) == variants
    for name, row in rows.items():
        # The 2-worker variant trains only the first of the recipes.
        assert row["trials"] == (1 if name == "tune_2_workers" else 2), name
        assert row["wall_s"] > 0 and row["train_s"] > 0, name
        assert row["overhead_per_trial_s"] is not None, name
        per_trial = (row["wall_s"] / row["trials"]) / (rows["plain"]["wall_s"] / 2)
        assert row["wall_vs_plain"] == pytest.approx(per_trial), name
        slot_seconds = (row["wall_s"] / row["trials"] - rows["plain"]["wall_s"] / 2) * 2
        assert row["over_plain_per_trial_s"] == pytest.approx(slot_seconds), name
    assert rows["plain"]["over_plain_per_trial_s"] == 0
    assert rows["tune_1_worker"]["actor_start_s"] > 0
    # Two trials on two slots: each started a Tune actor of its own.
    assert rows["tune_1_worker"]["new_process_trials"] == 2
    assert rows["tune_1_worker"]["reused_process_trials"] == 0
    # The same plans, seeds and batches by hand and through the engine.
    for metric in ("train/loss", "val/loss", "val/acc"):
        assert rows["plain"][metric] == pytest.approx(rows["tune_1_worker"][metric], abs=1e-3)
    text = overhead.report(rows, epochs=1)
    assert all(name in text for name in variants)
    assert "over plain/trial s" in text


def test_overhead_splits_trials_that_started_a_process_from_those_that_reused_one():
    overhead = importlib.import_module("benchmarks.overhead")

    def trial(process: int | None, overhead_s: float) -> object:
        return overhead._Trial(
            wall=10.0 + overhead_s,
            total=10.0,
            epochs=[(0, 5.0), (0, 5.0)],
            setup=0.0,
            phase_setup=0.0,
            metrics={},
            process=process,
        )

    # Two slots, five trials; a plain trial has no process to tell apart.
    trials = [trial(1, 5.0), trial(2, 4.0), trial(1, 0.2), trial(2, 0.1), trial(1, 0.3)]
    split = overhead._by_process(trials)
    assert split["new_process_trials"] == 2
    assert split["overhead_new_process_s"] == pytest.approx(4.5)
    assert split["reused_process_trials"] == 3
    assert split["overhead_reused_process_s"] == pytest.approx(0.2)
    assert overhead._by_process([trial(None, 1.0)]) == {
        "new_process_trials": 0,
        "overhead_new_process_s": None,
        "reused_process_trials": 0,
        "overhead_reused_process_s": None,
    }


def test_search_efficiency_benchmark_measures_epochs_to_target(ray_session, tmp_path):
    benchmark = _load("search_efficiency")
    # Chance on the tiny data is 1/6, so a low target is met and the hit is measured.
    sizes = dict(trials=2, seeds=1, epoch_scale=0.1, samples=360, target=0.1, tiny=True)
    result = benchmark.run(**sizes, harder=(1.01, 0.2))
    variants = {"phasetune", "tpe+strategy_asha", "random+fifo", "tpe+fifo"}
    assert {row["variant"] for row in result["rows"]} == variants
    for row in result["rows"]:
        assert 1 <= row["epochs_to_target"] <= row["epochs"]
        # No accuracy exceeds 1: never reached, and the ratio says neither did.
        assert row["harder"]["1.01"]["epochs_to_target"] is None
        assert row["harder"]["1.01"]["vs_random_bound"] == "-"
    assert set(result["summary"]) == variants
    assert result["summary"]["phasetune"]["harder"]["1.01"]["reached"] == 0

    # Again with other early stopping, random search taken from the first run.
    earlier = tmp_path / "first.json"
    earlier.write_text(json.dumps(result))
    again = benchmark.run(
        **sizes,
        variants=("phasetune",),
        harder=(0.2,),
        early_stopping={"grace_period": 1, "reduction_factor": 2.0},
        random_from=earlier,
    )
    assert again["settings"]["grace_period"] == 1
    assert again["random_from"] == str(earlier)
    rows = {row["variant"]: row for row in again["rows"]}
    assert set(rows) == {"phasetune", "random+fifo"}
    before = next(row for row in result["rows"] if row["variant"] == "random+fifo")
    for key in ("epochs_to_target", "epochs", "best_target_score", "wall_s"):
        assert rows["random+fifo"][key] == before[key], key
    # Only the thresholds this run asked for, so every variant's rows line up.
    assert set(rows["random+fifo"]["harder"]) == set(rows["phasetune"]["harder"]) == {"0.2"}
    expected = rows["phasetune"]["epochs_to_target"] / before["epochs_to_target"]
    assert rows["phasetune"]["vs_random"] == pytest.approx(expected)


def test_search_efficiency_runs_random_search_alone_for_a_later_comparison(
    ray_session, tmp_path, capsys
):
    benchmark = _load("search_efficiency")
    sizes = dict(trials=2, seeds=1, epoch_scale=0.1, samples=360, target=0.1, tiny=True)
    result = benchmark.run(**sizes, variants=("random+fifo",), harder=(0.2,))
    assert [row["variant"] for row in result["rows"]] == ["random+fifo"]
    assert set(result["summary"]) == {"random+fifo"}
    benchmark._print(result, 2, 0.1)
    assert "goal," not in capsys.readouterr().out  # nothing to compare yet
    # What it wrote is what a later run compares with.
    path = tmp_path / "random.json"
    path.write_text(json.dumps(result))
    rows = benchmark.random_rows_from(
        path, benchmark._comparable(2, 0.1, 360, 0.1, True), range(0, 1), (0.2,)
    )
    assert rows[0]["epochs"] == result["rows"][0]["epochs"]


def _refused_line(*args: str) -> str:
    """search_efficiency.py run with ``args``: it exits 2; the last line it wrote."""
    finished = subprocess.run(
        [sys.executable, str(BENCHMARKS / "search_efficiency.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 2
    return finished.stderr.strip().splitlines()[-1]


def test_search_efficiency_refuses_random_search_alone_from_a_file(tmp_path):
    random = str(tmp_path / "random.json")
    assert _refused_line("--variants", "random+fifo", "--random-from", random).endswith(
        "--random-from with --variants random+fifo alone leaves nothing to run;"
        " name the searches to compare with it"
    )
    assert not (tmp_path / "random.json").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"settings": None}, "records no settings; use a newer run's --json"),
        ({"settings": {"trials": 30}}, "ran with trials 30, this run with 50; use the same trials"),
        ({"rows": []}, "no random+fifo for seed 6; use seeds [] or run random+fifo"),
        ({"harder": {}}, "no epochs to 0.8; use thresholds it measured"),
    ],
)
def test_search_efficiency_refuses_random_search_that_does_not_fit(tmp_path, change, message):
    benchmark = _load("search_efficiency")
    settings = {"trials": 50, "epoch_scale": 0.5, "samples": 2400, "target": 0.75, "tiny": False}
    row = {"seed": 6, "variant": "random+fifo", "harder": {"0.8": {"epochs_to_target": 9}}}
    earlier = {"settings": dict(settings), "rows": [row]}
    if "settings" in change:
        earlier["settings"] = change["settings"] and {**settings, **change["settings"]}
    if "rows" in change:
        earlier["rows"] = change["rows"]
    if "harder" in change:
        row["harder"] = change["harder"]
    path = tmp_path / "earlier.json"
    path.write_text(json.dumps(earlier))
    with pytest.raises(ValueError, match="--random-from .*earlier.json: ") as raised:
        benchmark.random_rows_from(path, settings, range(6, 7), (0.8,))
    assert str(raised.value).endswith(message)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(("seeds", "last_to_85"), [(range(0, 4), None), (range(4, 8), 674)])
def test_search_efficiency_reads_the_committed_random_search(seeds, last_to_85):
    benchmark = _load("search_efficiency")
    settings = {"trials": 50, "epoch_scale": 0.5, "samples": 2400, "target": 0.75, "tiny": False}
    rows = benchmark.random_rows_from(
        BENCHMARKS / "results" / f"random_search_50_trials_seeds_{seeds[0]}-{seeds[-1]}.json",
        settings,
        seeds,
        (0.8, 0.82, 0.84, 0.85),
    )
    assert sorted(rows) == list(seeds)
    assert rows[seeds[-1]]["harder"]["0.85"]["epochs_to_target"] == last_to_85


def test_search_efficiency_refuses_a_variant_its_scheduler_does_not_run():
    last_line = _refused_line("--scheduler", "phase_asha", "--variants", "tpe+asha")
    assert "--variants tpe+asha does not run with --scheduler phase_asha" in last_line
    assert last_line.endswith("use tpe+phase_asha")


def test_search_efficiency_counts_epochs_to_each_threshold_in_report_order():
    benchmark = _load("search_efficiency")
    # (seconds since the first start, trial's start order, metrics) per reported epoch
    accs = [(1.0, 1, 0.3), (1.5, 2, 0.5), (2.0, 1, 0.78), (2.5, 2, 0.81), (3.0, 1, 0.8)]
    segs = [0.9, 0.1, 0.2, 0.6, 0.7]
    reports = [
        (at, order, {"val/acc": acc, "val/seg_miou": seg})
        for (at, order, acc), seg in zip(accs, segs, strict=True)
    ]
    assert benchmark._to_target(reports, {"val/acc": 0.75}) == {
        "epochs_to_target": 3,
        "wall_to_target_s": 2.0,
        "hit_trial": 1,
    }
    assert benchmark._to_target(reports, {"val/acc": 0.81})["epochs_to_target"] == 4
    assert benchmark._to_target(reports, {"val/acc": 0.9})["epochs_to_target"] is None
    # Several bounds: the first epoch that meets all of them.
    both = {"val/acc": 0.5, "val/seg_miou": 0.5}
    assert benchmark._to_target(reports, both)["epochs_to_target"] == 4
    mine, theirs = {"epochs_to_target": 4}, {"epochs_to_target": 16}
    assert benchmark._ratio(mine, theirs, 10, 40) == ("=", 0.25)
    assert benchmark._ratio(mine, {"epochs_to_target": None}, 10, 40) == ("<=", 0.1)
    assert benchmark._ratio({"epochs_to_target": None}, theirs, 10, 40) == (">=", 10 / 16)


def _hits(*ratios: tuple[str, float | None], reached: int) -> list[dict]:
    hits = [{"vs_random_bound": bound, "vs_random": ratio} for bound, ratio in ratios]
    for hit in hits[:reached]:
        hit["epochs_to_target"], hit["wall_to_target_s"] = 10, 1.0
    for hit in hits[reached:]:
        hit["epochs_to_target"] = hit["wall_to_target_s"] = None
    return hits


def test_search_efficiency_bounds_the_ratio_over_seeds_random_search_never_met():
    benchmark = _load("search_efficiency")
    # Both met it in two seeds; in a third only this search did, within 0.1x random
    # search's budget; in a fourth neither did.
    hits = _hits(("=", 0.8), ("=", 0.2), ("<=", 0.1), ("-", None), reached=3)
    summary = benchmark._geo_mean_vs_random(hits)
    assert summary["vs_random"] == pytest.approx(0.4)
    assert summary["vs_random_seeds"] == 2
    assert summary["vs_random_at_most"] == pytest.approx((0.8 * 0.2 * 0.1) ** (1 / 3))
    assert summary["vs_random_at_most_seeds"] == 3
    assert benchmark.verdict(summary).endswith(": met")
    assert "0.40x where both reached it (2 seeds); at most 0.25x over the 3 seeds" in (
        benchmark.verdict(summary)
    )

    # A seed where only random search met it bounds nothing from above, and fails the goal.
    hits = _hits(("=", 0.4), ("<=", 0.1), (">=", 2.0), reached=2)
    summary = benchmark._geo_mean_vs_random(hits)
    assert summary["vs_random_at_most"] is None
    assert summary["vs_random_at_most_seeds"] == 0
    assert benchmark.verdict(summary) == (
        "0.40x where both reached it (1 seed); only random search reached it in 1 seed: not met"
    )

    summary = benchmark._geo_mean_vs_random(_hits(("=", 0.9), ("=", 0.6), reached=2))
    assert summary["vs_random_at_most"] is None
    assert benchmark.verdict(summary).endswith(": not met")
    # Only random search met it, in one seed of two: that fails the goal outright.
    summary = benchmark._geo_mean_vs_random(_hits(("-", None), (">=", 1.5), reached=0))
    assert benchmark.verdict(summary) == "only random search reached it (1 seed): not met"
    # Neither search met it in any seed: nothing to decide on.
    summary = benchmark._geo_mean_vs_random(_hits(("-", None), ("-", None), reached=0))
    assert benchmark.verdict(summary) == "undetermined (no seed where both reached it)"


def test_searcher_scale_runs_the_real_searcher_and_the_references(ray_session):
    benchmark = _load("searcher_scale")
    rows = benchmark.run(
        trials=(8,), searchers=("phasetune", "optuna_memory", "random"), concurrency=2
    )
    assert [row.searcher for row in rows] == ["phasetune", "optuna_memory", "random"]
    for row in rows:
        assert row.trials == 8
        assert row.wall_s > 0
        assert 0 <= row.stopped_early < 8
    timed = {row.searcher: row.searcher_s for row in rows}
    # The searcher's own calls are timed for Optuna searchers, not for the generator.
    assert timed["random"] is None
    assert all(seconds > 0 for seconds in timed["phasetune"].values())
    # The scheduler's calls are timed for every searcher.
    assert all(row.scheduler_s > 0 for row in rows)
    assert "phasetune" in benchmark.format_table(rows)


def test_searcher_scale_fake_score_peaks_at_one_lr():
    benchmark = _load("searcher_scale")
    best = benchmark.fake_score({"strategy": "single_phase", "single_phase": {"lr": 1e-3}})
    assert best == 1.0
    assert benchmark.fake_score({"strategy": "progressive", "lr": 1e-5}) < best


@pytest.mark.parametrize(
    ("name", "sampler"),
    [("phasetune", "IncrementalTPESampler"), ("phasetune_optuna_tpe", "TPESampler")],
)
def test_searcher_scale_compares_the_search_with_optunas_own_tpe(name, sampler, tmp_path):
    from search.config import load_experiment

    config = load_experiment(None)
    searcher, _ = _load("searcher_scale")._search_alg(
        name, config, config.search_space(), str(tmp_path), concurrency=2
    )
    assert type(searcher._sampler).__name__ == sampler
    assert searcher._sampler._n_startup_trials == config.search.startup_trials


def test_gpu_throughput_compares_engine_and_hand_written_loops_on_cpu():
    benchmark = _load("gpu_throughput")
    outcome = benchmark.run(device="cpu", tiny=True, epochs=2)
    assert [rate.name for rate in outcome["rates"]] == [
        "phasetune engine fp32",
        "hand-written fp32",
        "phasetune engine bf16 autocast",
        "hand-written bf16 autocast",
    ]
    for rate in outcome["rates"]:
        assert rate.samples_per_s > 0
        assert rate.end_to_end_per_s > 0
        assert 0.0 <= rate.val_acc <= 1.0
    assert outcome["sharing"] == []  # GPU sharing needs a GPU
    report = benchmark.format_report(outcome)
    assert "engine / loop samples/s: fp32" in report
    # The header and the four rows line up, the longest name included.
    table = report.splitlines()[1:6]
    assert len({len(line) for line in table}) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-GPU message needs a machine without")
def test_gpu_throughput_without_a_gpu_prints_one_line_and_exits_0():
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_throughput.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1
    assert "no CUDA GPU" in lines[0]


def test_gpu_throughput_shares_a_logical_gpu_among_trials():
    # Its own Ray, with one GPU declared on this GPU-free machine: Ray schedules the
    # trials' fractional GPU requests as on a real one, and the engine, finding no
    # CUDA, trains on the CPU. What this checks is the sharing part's plumbing.
    script = """
import dataclasses, importlib.util, json, sys
import ray
from search.config import load_experiment
from search.ray_runtime import configure_runtime
spec = importlib.util.spec_from_file_location("gpu_throughput", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
configure_runtime()
ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False)
config = load_experiment(None)
plan = module.benchmark_plan(config, 360, 2, True)
shared = [dataclasses.asdict(module.share_gpu(n, config, plan, 2)) for n in (1, 2)]
ray.shutdown()
print(json.dumps(shared))
"""
    environment = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(BENCHMARKS / "gpu_throughput.py")],
        cwd=BENCHMARKS.parent,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    shared = json.loads(done.stdout.strip().splitlines()[-1])
    assert [row["trials"] for row in shared] == [1, 2]
    for row in shared:
        assert row["per_trial_per_s"] > 0
        assert row["total_per_s"] == pytest.approx(row["per_trial_per_s"] * row["trials"])
        # No GPU to read here: no utilisation rather than a made-up one.
        assert row["gpu_util_percent"] is None


@pytest.mark.slow
def test_data_scale_measures_memory_and_images_per_s_at_the_smallest_size(tmp_path):
    # A subprocess, as a user runs it: each of its searches starts a Ray of its own.
    output = tmp_path / "data_scale.json"
    environment = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    command = [sys.executable, str(BENCHMARKS / "data_scale.py"), "--tiny", "--device", "cpu"]
    command += ["--work-dir", str(tmp_path / "work"), "--json", str(output)]
    done = subprocess.run(
        command, cwd=BENCHMARKS.parent, env=environment, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    benchmark = _load("data_scale")
    rows = json.loads(output.read_text())
    assert [row["n"] for row in rows] == [benchmark.TINY_N]
    row = rows[0]
    assert set(row) == {
        "n",
        "uint8_bytes",
        "decode_s",
        "node_bytes_1_trial",
        "node_bytes_2_trials",
        "node_bytes_ddp",
        "images_per_s",
        "dataloader_images_per_s",
    }
    assert all(value > 0 for value in row.values()), row
    assert row["uint8_bytes"] == benchmark.TINY_N * 3 * benchmark.TINY.image_size**2
    # The folder is written once and reused by a later run.
    folder, seconds = benchmark.image_folder(
        tmp_path / "work", benchmark.TINY_N, benchmark.TINY.image_size
    )
    assert seconds is None
    assert len(list(folder.glob("*/*.jpg"))) == benchmark.TINY_N
    assert "goals:" in done.stdout
    report = benchmark.format_report([benchmark.Row(**row)], benchmark.TINY)
    assert f"{row['images_per_s'] / row['dataloader_images_per_s']:.2f}x" in report


def test_epoch_log_keeps_the_order_and_stops_at_the_budget(tmp_path):
    peers = _load("search_peers")
    log = peers.EpochLog(tmp_path / "log.jsonl", budget=3, metrics=("val/acc",))
    point = {"strategy": "single_phase", "single_phase": {"epochs": 20}}
    log.record("a", point, {"epoch": 1, "val/acc": 0.2, "target_score": 0.3, "targets_met": 0})
    log.record("b", point, {"epoch": 1, "val/acc": 0.5, "target_score": 0.6, "targets_met": 0})
    with pytest.raises(peers.BudgetSpent):
        log.record("a", point, {"epoch": 2, "val/acc": 0.4, "target_score": 0.5, "targets_met": 0})
    with pytest.raises(peers.BudgetSpent):  # past the budget: nothing more is kept
        log.record("b", point, {"epoch": 2, "val/acc": 0.9, "target_score": 1.1, "targets_met": 1})
    assert log.spent() == 3
    assert [(order, line["epoch"]) for _, order, line in log.epochs()] == [(1, 1), (2, 1), (1, 2)]
    # The best trial by its last epoch: b's 0.6, not a's 0.5.
    assert log.best()["trial"] == "b"
    assert log.best()["point"] == point


def _tiny_peer_config(tmp_path, epoch_scale: float):
    from search.config import ExperimentConfig, load_experiment

    raw = load_experiment(None).model_dump()
    raw["search"].update(num_samples=4, epoch_scale=epoch_scale, seed=0)
    raw["dataset"].update(num_samples=360, image_size=16, num_classes=6)
    raw["model"].update(width=4, pretrain={"num_samples": 400, "epochs": 1})
    raw["targets"] = [{"metric": "val/acc", "threshold": 0.1, "source": "test", "assumed": True}]
    raw["storage"] = {"path": str(tmp_path)}
    return ExperimentConfig.model_validate(raw)


def _run_peer(name: str, tmp_path: Path, budget: int, epoch_scale: float = 0.1, peers=None):
    peers = peers or _load("search_peers")
    config = _tiny_peer_config(tmp_path, epoch_scale)
    log = peers.EpochLog(tmp_path / "log.jsonl", budget, peers.target_metrics(config))
    outcome = peers.PEERS[name][0](config, log, tmp_path, 2)
    first_recipe = config.search_space().strategies[0].baselines[0].params
    return log, outcome, first_recipe


def _assert_peer_ran(log, outcome, first_recipe, budget: int) -> None:
    epochs = log.epochs()
    # Exactly the budget, however the peer counts its own.
    assert len(epochs) == budget
    # The documents' first recipe is the first trial (enqueued, or PriorBand's prior);
    # Tune starts two at once, so it is among the first two.
    trials = {line["trial"]: line["point"] for _, _, line in epochs}
    first = next(p for p in list(trials.values())[:2] if p["strategy"] == "progressive")
    assert first["strategy"] == "progressive"
    for name in ("frozen_epochs", "partial_epochs", "full_epochs", "base_lr", "batch_size"):
        assert first["progressive"][name] == first_recipe[name], name
    # Each trial's epochs follow on from its last: a continued trial resumes where it was.
    last: dict[str, float] = {}
    for _, _, line in epochs:
        assert line["epoch"] == last.get(line["trial"], 0) + 1
        last[line["trial"]] = line["epoch"]
    assert outcome.trials >= 2
    assert math.isfinite(outcome.best["target_score"])


def test_optuna_hyperband_peer_searches_phasetune_plans_within_the_budget(tmp_path):
    log, outcome, first_recipe = _run_peer("optuna-hyperband", tmp_path, budget=14)
    _assert_peer_ran(log, outcome, first_recipe, 14)


@pytest.mark.parametrize(
    "peer",
    [
        "optuna-hyperband",
        pytest.param("tune-optuna-asha", marks=pytest.mark.slow),  # starts Ray
        pytest.param("neps-priorband", marks=pytest.mark.peers),
    ],
)
def test_a_peer_whose_budget_ends_on_a_trials_first_epoch_stops_there(peer, tmp_path, request):
    if peer == "tune-optuna-asha":
        request.getfixturevalue("ray_session")
    # The first recipe trains 3 epochs at this scale: the 4th is the next trial's first
    # (Tune's two trials at once: a trial's first or second).
    log, outcome, _ = _run_peer(peer, tmp_path, budget=4)
    assert len(log.epochs()) == 4
    assert outcome.trials >= 2


@pytest.mark.parametrize(
    "peer", ["optuna-hyperband", pytest.param("neps-priorband", marks=pytest.mark.peers)]
)
def test_a_peer_goes_on_past_a_run_that_diverged(peer, tmp_path, monkeypatch):
    # Tune's searcher goes on past an errored trial by itself; the in-process peers
    # must not stop the search on it either.
    peers = _load("search_peers")
    started = []

    def run_plan(plan, engine, reporter):
        started.append(plan)
        if len(started) == 2:
            raise FloatingPointError("val/loss is nan at epoch 1 (phase 1): the run diverged")
        return real_run_plan(plan, engine, reporter)

    real_run_plan = peers.run_plan
    monkeypatch.setattr(peers, "run_plan", run_plan)
    log, outcome, _ = _run_peer(peer, tmp_path, budget=10, peers=peers)
    assert len(log.epochs()) == 10
    assert len(started) >= 3
    assert outcome.trials >= 3


def test_tune_optuna_asha_peer_searches_phasetune_plans_within_the_budget(ray_session, tmp_path):
    log, outcome, first_recipe = _run_peer("tune-optuna-asha", tmp_path, budget=14)
    _assert_peer_ran(log, outcome, first_recipe, 14)


@pytest.mark.peers
def test_neps_priorband_peer_searches_phasetune_plans_within_the_budget(tmp_path):
    # Plans of up to 15 epochs, so that PriorBand has rungs (5 and 15 epochs) to promote to.
    log, outcome, first_recipe = _run_peer("neps-priorband", tmp_path, 40, epoch_scale=0.3)
    _assert_peer_ran(log, outcome, first_recipe, 40)


@pytest.mark.peers
def test_neps_space_carries_the_documents_recipes_as_priors():
    peers = _load("search_peers")
    from search.config import load_experiment

    search_space = load_experiment(None).search_space()
    space = type(peers.neps_space(search_space, 2, 20))
    # The strategy by its index; the first strategy with a recipe is its prior.
    assert space.strategy.choices == (0, 1) and space.strategy.prior == 0
    assert space.progressive__frozen_epochs.prior == 3
    assert space.progressive__base_lr.prior == pytest.approx(1e-3)
    assert space.epochs.lower == 2 and space.epochs.upper == 20
    # Fixed parameters, and those a fixed one switches off, are not sampled.
    assert not hasattr(space, "progressive__lr_schedule")
    assert not hasattr(space, "progressive__step_size")
    assert hasattr(space, "single_phase__plateau_factor")
    # Flat, NePS runs its classic PriorBand (which samples around the priors).
    from neps.space.neps_spaces.neps_space import convert_neps_to_classic_search_space

    assert convert_neps_to_classic_search_space(space()) is not None
    # A sampled configuration back as a trial config: choices by index, the fixed
    # parameters put back.
    config = {
        name: getattr(space, name).prior for name in vars(space) if name.startswith("progressive__")
    }
    point = peers._from_neps(search_space, {"strategy": 0, "epochs": 20, **config})
    recipe = search_space.strategies[0].baselines[0].params
    assert point["strategy"] == "progressive"
    assert {k: point["progressive"][k] for k in recipe} == pytest.approx(recipe)


def test_search_efficiency_gives_each_peer_phasetune_epochs_and_compares(
    ray_session, tmp_path, capsys, monkeypatch
):
    benchmark = _load("search_efficiency")
    sizes = dict(trials=3, seeds=1, epoch_scale=0.1, samples=360, target=0.1, tiny=True)
    peer, _ = benchmark.PEERS["optuna-hyperband"]
    threads = []

    def counting_threads(config, log, root, torch_threads):
        threads.append(torch_threads)
        return peer(config, log, root, torch_threads)

    monkeypatch.setitem(benchmark.PEERS, "optuna-hyperband", (counting_threads, "optuna"))
    result = benchmark.run(**sizes, variants=("phasetune", "optuna-hyperband"), harder=(1.01,))
    # A phasetune trial's threads (1 CPU per worker), whatever the machine's cores.
    assert threads == [1]
    rows = {row["variant"]: row for row in result["rows"]}
    assert set(rows) == {"phasetune", "optuna-hyperband"}
    assert rows["optuna-hyperband"]["epochs"] == rows["phasetune"]["epochs"]
    assert rows["phasetune"]["machine"] == rows["optuna-hyperband"]["machine"]
    assert rows["phasetune"]["machine"].startswith(f"torch {torch.__version__}, ")
    comparison = result["peers"]["optuna-hyperband"]
    expected = rows["phasetune"]["epochs_to_target"] / rows["optuna-hyperband"]["epochs_to_target"]
    assert comparison["main"]["vs_random"] == pytest.approx(expected)
    assert comparison["harder"]["1.01"]["reached"] == 0
    benchmark._print(result, 3, 0.1)
    out = capsys.readouterr().out
    assert "phasetune against each peer" in out
    assert "goal, best recipe: phasetune's mean best target_score >= every peer's" in out
    with pytest.raises(ValueError, match="spends phasetune's epochs; run phasetune too"):
        benchmark.run(**sizes, variants=("optuna-hyperband",))

    # The peer again, phasetune's numbers taken from the first run: no Ray, the same
    # budget, and the same epochs as the first time (the same threads, the same seed).
    earlier = tmp_path / "first.json"
    earlier.write_text(json.dumps(result))

    def no_ray():
        raise AssertionError("Ray started for a peer that trains in this process")

    monkeypatch.setattr(benchmark, "ray_running", no_ray)
    again = benchmark.run(
        **sizes, variants=("optuna-hyperband",), harder=(1.01,), phasetune_from=(earlier,)
    )
    assert again["phasetune_from"] == [str(earlier)]
    rows_again = {row["variant"]: row for row in again["rows"]}
    assert rows_again["phasetune"]["epochs"] == rows["phasetune"]["epochs"]
    assert rows_again["optuna-hyperband"]["trace"] == rows["optuna-hyperband"]["trace"]
    assert again["peers"]["optuna-hyperband"]["main"]["vs_random"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="the same startup_trials$"):
        benchmark.run(
            **sizes,
            variants=("optuna-hyperband",),
            harder=(1.01,),
            phasetune_from=(earlier,),
            startup_trials=4,
        )


def test_search_efficiency_refuses_a_peer_without_phasetune():
    assert _refused_line("--variants", "optuna-hyperband").endswith(
        "--variants optuna-hyperband spends phasetune's epochs; add phasetune or --phasetune-from"
    )


def test_search_efficiency_takes_phasetune_of_the_multitask_example_by_its_labels(tmp_path):
    benchmark = _load("search_efficiency")
    settings = {
        "trials": 20,
        "epoch_scale": 0.1,
        "samples": 1500,
        "target": 0.75,
        "tiny": False,
        "experiment": "multitask",
        "startup_trials": 10,
        "scheduler": "strategy_asha",
    }
    hit = {"epochs_to_target": 9}
    row = {
        "seed": 2,
        "variant": "phasetune",
        "harder": {"val/seg_miou 0.5": hit, "target_score 1.16": hit, "target_score 1.2": hit},
    }
    path = tmp_path / "multitask.json"
    path.write_text(json.dumps({"settings": settings, "rows": [row]}))
    rows = benchmark.phasetune_rows_from(
        (path,), settings, range(2, 3), ("val/seg_miou 0.5", "target_score 1.16")
    )
    assert list(rows[2]["harder"]) == ["val/seg_miou 0.5", "target_score 1.16"]
    with pytest.raises(benchmark.EarlierRunError, match="no epochs to target_score 1.18;"):
        benchmark.phasetune_rows_from((path,), settings, range(2, 3), ("target_score 1.18",))


def test_search_efficiency_refuses_a_phasetune_file_that_does_not_fit_in_one_line(tmp_path):
    earlier, out = tmp_path / "earlier.json", tmp_path / "out.json"
    earlier.write_text(json.dumps({"settings": {"trials": 12}, "rows": []}))
    line = _refused_line(
        "--variants", "optuna-hyperband", "--phasetune-from", str(earlier), "--json", str(out)
    )
    assert line.endswith("it ran with trials 12, this run with 30; use the same trials")
    assert not out.exists()


@pytest.mark.parametrize("variants", [["phasetune", "optuna-hyperband"], ["all"]])
def test_search_efficiency_refuses_to_run_phasetune_and_take_it_from_a_file(tmp_path, variants):
    earlier, out = str(tmp_path / "earlier.json"), str(tmp_path / "out.json")
    line = _refused_line("--variants", *variants, "--phasetune-from", earlier, "--json", out)
    assert line.endswith("--phasetune-from with --variants phasetune (or all): run it, or take it")
    assert not (tmp_path / "out.json").exists()


def test_a_peer_trial_paused_at_a_rung_continues_as_if_never_paused(tmp_path):
    """What a promotion does (PriorBand's, from ``previous_pipeline_directory``)."""
    peers = _load("search_peers")
    config = _tiny_peer_config(tmp_path, epoch_scale=0.2)
    point = {"strategy": "single_phase", "single_phase": {}}
    point["single_phase"] = dict(config.search_space().points_to_evaluate()[1])
    point["single_phase"] = {
        name.split("/", 1)[1]: value
        for name, value in point["single_phase"].items()
        if name != "strategy"
    }
    straight_log = peers.EpochLog(tmp_path / "straight.jsonl", 100, ())
    straight, trained = peers._Runner(config, straight_log, 2).train("a", point, until=5)
    assert trained == 5

    paused_log = peers.EpochLog(tmp_path / "paused.jsonl", 100, ())
    runner = peers._Runner(config, paused_log, 2)
    checkpoint = tmp_path / "state.pt"
    first, trained = runner.train("b", point, until=2, save_to=checkpoint)
    assert (first["epoch"], trained) == (2, 2)
    later = tmp_path / "later.pt"
    resumed, trained = runner.train("b", point, until=5, resume_from=checkpoint, save_to=later)
    assert (resumed["epoch"], trained) == (5, 3)
    assert [line["epoch"] for _, _, line in paused_log.epochs()] == [1, 2, 3, 4, 5]
    assert resumed["val/loss"] == straight["val/loss"]
    assert resumed["val/acc"] == straight["val/acc"]
    # Asked again for fewer epochs than it has: nothing to train, its last metrics.
    again, trained = runner.train("b", point, until=4, resume_from=later)
    assert (again["epoch"], trained) == (5, 0)


def _efficiency_row(seed: int, variant: str, to_target: int | None, epochs: int, score: float):
    hit = {"epochs_to_target": to_target, "wall_to_target_s": to_target, "hit_trial": 1}
    return {
        "seed": seed,
        "variant": variant,
        **hit,
        "harder": {"0.85": {"epochs_to_target": None, "wall_to_target_s": None}},
        "best_target_score": score,
        "epochs": epochs,
        "wall_s": 10.0,
        # Every epoch by the first trial: [start order, target_score, val/acc].
        "trace": [[1, score, 0.5]] * epochs,
    }


def test_search_efficiency_combines_runs_of_other_seeds():
    benchmark = _load("search_efficiency")
    settings = {"trials": 50, "epoch_scale": 0.5, "experiment": "quickstart"}
    runs = [
        {
            "settings": settings,
            "rows": [
                _efficiency_row(seed, "phasetune", mine, 100, 1.02),
                _efficiency_row(seed, "optuna-hyperband", theirs, 100, 1.0),
            ],
        }
        for seed, mine, theirs in [(0, 20, 40), (1, 30, 30)]
    ]
    result = benchmark.combine(runs)
    assert [row["seed"] for row in result["rows"]] == [0, 0, 1, 1]
    comparison = result["peers"]["optuna-hyperband"]
    assert comparison["seeds"] == [0, 1]
    assert comparison["main"]["vs_random"] == pytest.approx(math.sqrt(0.5 * 1.0))
    assert comparison["mean_best_target_score"] == pytest.approx(1.02)
    assert result["summary"]["phasetune"]["reached"] == 2

    other = {**runs[1], "settings": {**settings, "trials": 30}}
    with pytest.raises(ValueError, match="the runs differ in trials; combine like runs"):
        benchmark.combine([runs[0], other])
    with pytest.raises(ValueError, match="seed 0 of phasetune is in two runs"):
        benchmark.combine([runs[0], runs[0]])


def test_search_efficiency_says_when_combined_rows_come_from_other_machines(capsys):
    benchmark = _load("search_efficiency")
    settings = {"trials": 50, "epoch_scale": 0.5, "experiment": "quickstart"}
    runs = [
        {
            "settings": settings,
            "target": 0.75,
            "rows": [_efficiency_row(seed, "phasetune", 20, 100, 1.0)],
        }
        for seed in (0, 1)
    ]
    for run in runs:
        run["rows"][0].update(best_val_acc=0.8, machine=benchmark._machine())
    benchmark._print(benchmark.combine(runs), 50, 0.5)
    assert "machines" not in capsys.readouterr().out
    # An earlier run's row, written before rows named their machine.
    del runs[1]["rows"][0]["machine"]
    benchmark._print(benchmark.combine(runs), 50, 0.5)
    assert (
        f"the rows come from 2 machines (not recorded; {benchmark._machine()})"
        in capsys.readouterr().out
    )


@pytest.mark.parametrize(
    "variant",
    ["phasetune+independent-tpe", "phasetune+random-fraction", "phasetune+one-at-a-time"],
)
def test_search_efficiency_compares_phasetune_with_one_setting_changed_with_the_peers_too(
    capsys, variant
):
    benchmark = _load("search_efficiency")
    assert variant in benchmark.ONE_SETTING_CHANGED
    settings = {"trials": 50, "epoch_scale": 0.5, "experiment": "quickstart"}
    # The peer's rows from one run, the variant's from another (as it is run).
    peers_run = {
        "settings": settings,
        "rows": [
            _efficiency_row(0, "phasetune", 20, 100, 1.02),
            _efficiency_row(0, "optuna-hyperband", 40, 100, 1.0),
        ],
    }
    variant_run = {
        "settings": settings,
        "rows": [_efficiency_row(0, variant, 10, 90, 1.03)],
    }
    for run in (peers_run, variant_run):
        run["target"] = 0.75
        for row in run["rows"]:
            row["best_val_acc"] = 0.8
    result = benchmark.combine([peers_run, variant_run])
    assert result["peers"]["optuna-hyperband"]["main"]["vs_random"] == pytest.approx(0.5)
    theirs = result["peers_of"][variant]["optuna-hyperband"]
    assert theirs["main"]["vs_random"] == pytest.approx(0.25)
    assert theirs["mean_best_target_score"] == pytest.approx(1.03)
    assert list(result["peers_of"]) == [variant]
    benchmark._print(result, 50, 0.5)
    printed = capsys.readouterr().out
    assert f"{variant} against each peer" in printed
    assert f"{variant} 1.0300, optuna-hyperband 1.0000" in printed


@pytest.mark.parametrize(
    ("variant", "setting", "value"),
    [
        ("phasetune+independent-tpe", "multivariate", False),
        ("phasetune+random-fraction", "random_fraction", 0.33),
        ("phasetune+one-at-a-time", "max_concurrent_trials", 1),
    ],
)
def test_search_efficiency_builds_each_variant_as_phasetune_but_one_setting(
    variant, setting, value
):
    benchmark = _load("search_efficiency")
    from search.config import ExperimentConfig

    base = ExperimentConfig().model_dump()
    searches = benchmark._variants("strategy_asha")
    assert variant not in benchmark._default_variants("strategy_asha")
    mine = benchmark._config(base, "a", searches["phasetune"], 3, "/tmp/r").search
    changed = benchmark._config(base, "b", searches[variant], 3, "/tmp/r").search
    assert getattr(changed, setting) == value != getattr(mine, setting)
    assert changed.model_dump(exclude={setting}) == mine.model_dump(exclude={setting})


def test_search_efficiency_splits_a_peers_epochs_to_target_into_the_hit_trials_and_others():
    benchmark = _load("search_efficiency")
    settings = {"trials": 50, "epoch_scale": 0.5, "experiment": "quickstart"}
    # Both searches meet the threshold with their trial 2 at its 3rd epoch; phasetune's
    # other trial trains 4 epochs meanwhile, the peer's 1 (it trains fewer per second).
    mine = _efficiency_row(0, "phasetune", 7, 8, 1.0)
    mine["trace"] = [[1, 0, 0], [2, 0, 0], [1, 0, 0], [1, 0, 0], [2, 0, 0], [1, 0, 0], [2, 0, 0]]
    mine["trace"] += [[1, 0, 0]]
    mine.update(hit_trial=2, wall_to_target_s=6.0, wall_s=8.0)
    theirs = _efficiency_row(0, "tune-optuna-asha", 4, 8, 1.0)
    theirs["trace"] = [[1, 0, 0], [2, 0, 0], [2, 0, 0], [2, 0, 0]] + [[3, 0, 0]] * 4
    theirs.update(hit_trial=2, wall_to_target_s=8.0, wall_s=16.0)
    result = benchmark.combine([{"settings": settings, "rows": [mine, theirs]}])
    main = result["peers"]["tune-optuna-asha"]["main"]
    assert main["vs_random"] == pytest.approx(7 / 4)
    assert main["phasetune_split"] == {"own": 3, "others": 4, "epochs_per_s": 1.0}
    assert main["peer_split"] == {"own": 3, "others": 1, "epochs_per_s": 0.5}
    assert main["wall_vs_peer"] == pytest.approx(6 / 8)
    assert main["same_hit_trial"] == 1
    # Where one of them never met it, there is nothing to split.
    harder = result["peers"]["tune-optuna-asha"]["harder"]["0.85"]
    assert harder["phasetune_split"] is None and harder["wall_vs_peer"] is None
    assert harder["same_hit_trial"] == 0
