"""A trial's best-config files, with what a file needs to train it again: the
experiment's name and epoch scale, each trial's resources and a strategy of its own."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from analysis.export import export_best
from analysis.ranking import RankedTrial
from search.config import ExperimentConfig
from trainables.launch import torch_threads
from trainables.storage import ExperimentStore

__all__ = ["export_to"]


def _trial_resources(config: ExperimentConfig) -> dict[str, Any]:
    """What each trial of ``config`` trains on, as a best-config file records it."""
    resources = config.resources
    return {
        "workers_per_trial": resources.workers_per_trial,
        "cpus_per_worker": resources.cpus_per_worker,
        "gpus_per_worker": resources.gpus_per_worker,
        "torch_threads": torch_threads(resources.cpus_per_worker),
    }


def export_to(
    store: ExperimentStore,
    trial: RankedTrial,
    targets: tuple[Any, ...],
    config: ExperimentConfig,
    *,
    output: str | None = None,
) -> tuple[Path | str, Path | str]:
    """``best.yaml`` and ``best.json`` of ``trial`` of the experiment ``config`` in
    ``output`` (a path or URI; default: the experiment). Remote files are written
    here first, then uploaded."""
    target = ExperimentStore.at(output) if output else store
    about = {
        "experiment": config.name,
        "experiment_dir": store.location,
        "epoch_scale": config.search.epoch_scale,
        "resources": _trial_resources(config),
        "definition": _own_definition(config, trial.record.strategy),
    }
    if not target.remote:
        return export_best(trial, targets, target.location, **about)
    with tempfile.TemporaryDirectory(prefix="phasetune-export-") as staging:
        files = export_best(trial, targets, staging, **about)
        for path in files:
            # The header's "train it again" line names where the file ends up.
            text = path.read_text().replace(str(files[0]), target.uri(files[0].name))
            target.write_text(path.name, text)
    return target.uri("best.yaml"), target.uri("best.json")


def _own_definition(config: ExperimentConfig, strategy: str) -> dict[str, Any] | None:
    """The experiment file's section of a strategy of its own (None for a built-in)."""
    section = config.strategies.get(strategy)
    return section.definition() if section is not None and section.is_own else None
