"""Best-config files: everything needed to train a trial's recipe again."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from analysis.ranking import RankedTrial
from analysis.targets import Target, verdicts
from trainables.atomic import replaced_atomically
from trainables.phases import PhasePlan

__all__ = ["BestConfig", "expand_plan", "export_best", "load_best", "versions"]

FORMAT = "phasetune/best-config/v1"


def versions() -> dict[str, str]:
    """Versions of Python and the libraries a result depends on."""
    found = {"python": platform.python_version()}
    for package in ("phasetune", "torch", "ray", "optuna"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def expand_plan(plan: PhasePlan) -> list[dict[str, Any]]:
    """The plan as a reader wants it: per phase its epochs, lr and trained groups."""
    rows = []
    for phase in plan.phases:
        groups = phase.trainable_groups(plan.model.num_groups)
        rows.append(
            {
                "name": phase.name,
                "epochs": phase.epochs,
                "lr": phase.lr,
                "lr_schedule": phase.lr_schedule.kind,
                "trainable": phase.trainable,
                "trainable_groups": groups,
                "frozen_groups": [g for g in range(plan.model.num_groups) if g not in groups],
                "tasks": list(phase.tasks),
                "early_stopping_patience": (
                    phase.early_stopping.patience if phase.early_stopping else None
                ),
            }
        )
    return rows


def _plain(value: Any) -> Any:
    """Values YAML and JSON both write (numpy scalars and tuples become plain)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


class BestConfig(Mapping[str, Any]):
    """A best-config file as read: read-only. Its fields by key, as the file holds them,
    and typed views of those a run again needs: the plan, targets, resources, the
    searched trial and its metrics."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self._document = dict(document)

    def __getitem__(self, key: str) -> Any:
        return self._document[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._document)

    def __len__(self) -> int:
        return len(self._document)

    def __repr__(self) -> str:
        return f"BestConfig({self._document!r})"

    @property
    def trial_id(self) -> str:
        return str(self._document["trial_id"])

    @property
    def metrics(self) -> dict[str, float]:
        """The searched trial's last reported numbers."""
        return dict(self._document.get("metrics", {}))

    @property
    def plan(self) -> PhasePlan:
        return PhasePlan.from_dict(self._document["plan"])

    @property
    def resources(self) -> dict[str, Any] | None:
        """What the trial trained on (workers, CPUs and GPUs per worker, torch
        threads); None in files written before it was recorded."""
        resources = self._document.get("resources")
        return None if resources is None else dict(resources)

    @property
    def targets(self) -> tuple[Target, ...]:
        return tuple(
            Target(
                metric=t["metric"],
                threshold=t["threshold"],
                direction=t["direction"],
                source=t.get("source", ""),
                assumed=t.get("assumed", False),
            )
            for t in self._document["targets"]
        )


def export_best(
    trial: RankedTrial,
    targets: Sequence[Target],
    out_dir: str | os.PathLike[str],
    *,
    experiment: str,
    experiment_dir: str,
    epoch_scale: float = 1.0,
    resources: Mapping[str, Any] | None = None,
    definition: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``best.yaml`` and ``best.json`` for ``trial``; return their paths.

    ``params`` are the values as sampled; ``phases`` and ``plan`` hold the epochs
    after the search's ``epoch_scale``, which is recorded beside them. ``resources``
    is what the trial trained on, so that training it again can match it.
    ``definition`` is the experiment file's section of a strategy of its own: the
    recipe as written beside the plan it expanded to (training again reads the plan).
    """
    record = trial.record
    if record.phase_plan is None:
        raise ValueError(f"trial {record.trial_id} has no plan to export")
    plan = record.phase_plan
    metrics = {k: v for k, v in record.metrics.items() if isinstance(v, (int, float))}
    document = _plain(
        {
            "format": FORMAT,
            "experiment": experiment,
            "experiment_dir": experiment_dir,
            "trial_id": record.trial_id,
            "rank": trial.rank,
            "status": record.status,
            "strategy": record.strategy,
            **({"definition": dict(definition)} if definition is not None else {}),
            "params": dict(record.params),
            "epoch_scale": epoch_scale,
            "phases": expand_plan(plan),
            "metrics": metrics,
            "target_score": trial.target_score,
            "targets_met": trial.targets_met,
            "targets": verdicts(record.metrics, targets),
            "seed": plan.seed,
            **({"resources": dict(resources)} if resources is not None else {}),
            "plan": plan.to_dict(),
            "provenance": {
                "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "versions": versions(),
                "git_commit": _git_commit(),
            },
        }
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    yaml_path, json_path = out / "best.yaml", out / "best.json"
    header = (
        f"# Best configuration of experiment {experiment!r} (trial {record.trial_id}).\n"
        f"# Train it again with: phasetune train {yaml_path}\n"
    )
    _write_atomic(yaml_path, header + yaml.safe_dump(document, sort_keys=False))
    _write_atomic(json_path, json.dumps(document, indent=2) + "\n")
    return yaml_path, json_path


def _write_atomic(path: Path, text: str) -> None:
    with replaced_atomically(path) as partial:
        partial.write_text(text)


def load_best(path: str | os.PathLike[str]) -> BestConfig:
    """Read a best-config file (YAML or JSON); ValueError if it is not one."""
    text = Path(path).read_text()
    document = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"{path}: not a phasetune best-config file (format {FORMAT})")
    if not isinstance(document.get("plan"), dict):
        raise ValueError(f"{path}: it has no plan; export the best trial again")
    try:
        plan = PhasePlan.from_dict(document["plan"])
    except (KeyError, TypeError) as error:
        raise ValueError(
            f"{path}: its plan cannot be read ({error}); export the best trial again"
        ) from None
    plan.validate()
    return BestConfig(document)
