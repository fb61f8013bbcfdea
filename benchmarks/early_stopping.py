"""Early stopping compared: plain, per-strategy and phase-aligned ASHA vs none (FIFO).

Each scheduler runs the same search: the quickstart's task, the documents'
baselines first, then recipes from a *seeded random* sampler, so every scheduler
sees the identical sequence of recipes (TPE would adapt to what each scheduler
let finish, and the runs would stop being comparable). Printed per scheduler:
the best target_score and val/acc reached, epochs spent and their ratio to no
early stopping, wall time, and whether the recipe that no early stopping ranks
first survived (was not stopped early).

    python benchmarks/early_stopping.py                 # 12 trials, epoch_scale 0.5
    python benchmarks/early_stopping.py --trials 24 --epoch-scale 1.0
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from search.config import ExperimentConfig, load_experiment
from search.experiment import run_search
from search.ray_runtime import ray_running

SCHEDULERS = ("fifo", "asha", "strategy_asha", "phase_asha")


def _recipe_key(record: Any) -> str:
    return json.dumps({"strategy": record.strategy, **record.params}, sort_keys=True, default=str)


def run(trials: int, epoch_scale: float, samples: int, seed: int, tiny: bool) -> dict[str, Any]:
    base = load_experiment(None).model_dump()
    base["search"].update(num_samples=trials, epoch_scale=epoch_scale, seed=seed, sampler="random")
    base["dataset"]["num_samples"] = samples
    if tiny:  # for the smoke test: tiny data and model, seconds per search
        base["dataset"].update(num_samples=360, image_size=16, num_classes=6)
        base["model"].update(width=4, pretrain={"num_samples": 400, "epochs": 1})
    outcomes = {}
    with tempfile.TemporaryDirectory(prefix="phasetune-bench-") as root, ray_running():
        for scheduler in SCHEDULERS:
            raw = json.loads(json.dumps(base))
            raw["name"] = f"bench-{scheduler}"
            raw["search"]["scheduler"] = scheduler
            raw["storage"] = {"path": root}
            config = ExperimentConfig.model_validate(raw)
            outcomes[scheduler] = run_search(config)
        reference = outcomes["fifo"].ranked[0].record
        rows = {}
        for scheduler, outcome in outcomes.items():
            by_recipe = {_recipe_key(item.record): item.record for item in outcome.ranked}
            winner = by_recipe.get(_recipe_key(reference))
            best = outcome.ranked[0]
            rows[scheduler] = {
                "best_target_score": best.target_score,
                "best_val_acc": best.record.metrics.get("val/acc"),
                "epochs": sum(item.record.epochs for item in outcome.ranked),
                "wall_s": outcome.wall_seconds,
                "fifo_winner_status": winner.status if winner else "not sampled",
                "fifo_winner_rank": next(
                    (i.rank for i in outcome.ranked if i.record is winner), None
                ),
            }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epoch-scale", type=float, default=0.5)
    parser.add_argument("--samples", type=int, default=2400, help="data set size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="smallest size (smoke test)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    rows = run(args.trials, args.epoch_scale, args.samples, args.seed, args.tiny)
    fifo_epochs = rows["fifo"]["epochs"]
    print(
        f"{'scheduler':<13} {'best score':>10} {'best acc':>9} {'epochs':>7} {'vs fifo':>8}"
        f" {'wall s':>7}  fifo's winner"
    )
    for scheduler, row in rows.items():
        print(
            f"{scheduler:<13} {row['best_target_score']:>10.4f} {row['best_val_acc']:>9.4f}"
            f" {row['epochs']:>7} {row['epochs'] / fifo_epochs:>7.2f}x {row['wall_s']:>7.0f}"
            f"  {row['fifo_winner_status']} (rank {row['fifo_winner_rank']})"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
