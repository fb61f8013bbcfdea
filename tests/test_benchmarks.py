"""Benchmarks are scripts, not tests; this only keeps them from rotting."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_early_stopping_benchmark_runs_at_the_smallest_size(ray_session):
    rows = _load("early_stopping").run(trials=2, epoch_scale=0.1, samples=360, seed=0, tiny=True)
    assert set(rows) == {"fifo", "asha", "phase_asha"}
    for row in rows.values():
        assert row["epochs"] >= 1
        assert row["fifo_winner_status"] != "not sampled"  # same recipes under every scheduler
