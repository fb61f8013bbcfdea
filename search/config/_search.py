"""The sections that say how the search runs and what it aims at: ``search`` (sampler,
scheduler, objective), ``resources``, ``targets`` and ``storage``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from search.config._section import _Section
from trainables.storage import is_remote, join_location

__all__ = ["ResourcesConfig", "SearchConfig", "StorageConfig", "TargetConfig"]


class SearchConfig(_Section):
    num_samples: int = Field(12, ge=1, le=100_000)
    sampler: Literal["tpe", "random"] = "tpe"
    #: TPE: finished trials (baselines included) before it models; the ones before are
    #: drawn at random. Optuna's default 10: with 4 of the quickstart's 12, TPE
    #: learned from single-phase trials ASHA had cut short and never found the
    #: recipe 10 finds (docs/benchmarks-history.md).
    startup_trials: int = Field(10, ge=1)
    #: TPE: model the parameters jointly (one density per strategy's set of
    #: parameters), or each on its own (Optuna's ``TPESampler`` default).
    multivariate: bool = True
    #: TPE: after the start-up, each trial's chance of being drawn at random instead,
    #: as BOHB and SMAC interleave random configurations with their models' (TPE
    #: proposes around its few best trials, and a region the start-up missed is
    #: rarely tried again). 0 by default: a third at random did not help the
    #: quickstart's search over 6 seeds (docs/benchmarks.md).
    random_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    #: strategy_asha: plain ASHA judged short progressive plans and long single-phase
    #: ones at the same epochs, stopped every single-phase trial at epoch 2 in 2 of 8
    #: seeds of the 50-trial benchmark, and the search never found the recipes random
    #: search found (docs/benchmarks-history.md).
    scheduler: Literal["asha", "strategy_asha", "phase_asha", "median", "fifo"] = "strategy_asha"
    max_concurrent_trials: int | None = Field(None, ge=1)
    seed: int = Field(0, ge=0)
    epoch_scale: float = Field(1.0, gt=0.0, le=100.0)
    grace_period: int = Field(2, ge=1)
    #: phase_asha: first decision at this share of each trial's planned epochs.
    grace_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    reduction_factor: float = Field(3.0, gt=1.0)
    evaluate_baselines: bool = True
    #: What Optuna optimises: the scalar ``target_score``, or ``pareto``: every
    #: target's metric as its own objective (a multi-objective study whose Pareto
    #: front shows the trade-offs between tasks). Schedulers and ranking still use
    #: ``target_score``.
    objective: Literal["target_score", "pareto"] = "target_score"


class ResourcesConfig(_Section):
    workers_per_trial: int = Field(1, ge=1, le=1024)
    cpus_per_worker: float = Field(1.0, gt=0.0)
    gpus_per_worker: float = Field(0.0, ge=0.0)
    max_failures: int = Field(0, ge=0, le=100)
    #: bf16 autocast of forward passes; "auto": on GPUs that support bf16, else fp32.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    #: Channels-last weights and batches; None: on GPUs only.
    channels_last: bool | None = None
    #: The whole data set in GPU memory; None: when it fits in a quarter of what is free.
    data_on_device: bool | None = None


class TargetConfig(_Section):
    metric: str
    threshold: float
    direction: Literal["max", "min"] = "max"
    source: str = "set in the experiment file"
    assumed: bool = False


class StorageConfig(_Section):
    #: Where experiments go: a local path, or a URI pyarrow's filesystems accept
    #: (``s3://bucket/prefix``, ``gs://...``; ``file://`` is a local, e.g. shared, mount).
    path: str = "phasetune_results"
    #: Where the Optuna study lives: an RDB URL (``sqlite:///...``, ``postgresql://...``,
    #: ``mysql://...``), or a path to a journal file (no ``://``; for file systems
    #: without reliable SQLite locking, e.g. NFS). None keeps a SQLite study beside
    #: the experiment.
    study: str | None = None

    def experiment_location(self, name: str) -> str:
        """Where experiment ``name`` goes: an absolute local path, or a URI."""
        return join_location(self.path, name)

    @field_validator("path")
    @classmethod
    def _writable_folder(cls, path: str) -> str:
        if is_remote(path):
            return path
        local = Path(path.removeprefix("file://")).expanduser().resolve()
        # The experiment folder is made when the search starts: what exists of it must be
        # a folder this user can write in.
        existing = next(folder for folder in (local, *local.parents) if folder.exists())
        if not existing.is_dir():
            raise ValueError(
                f"{existing} is a file, not a folder; give a folder for the experiments"
                " (it is created if missing)"
            )
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"cannot write in {existing}; give a folder you can write to")
        return path

    @model_validator(mode="after")
    def _journal_folder_exists(self) -> StorageConfig:
        if is_remote(self.path) and self.study is None:
            # SQLite needs a local file with working locks; an object store has neither.
            raise ValueError(
                f"storage.study: is required when storage.path is a remote URI ({self.path});"
                " give an Optuna RDB URL such as postgresql://user:password@host/db"
            )
        if self.study and "://" not in self.study:
            folder = Path(self.study).expanduser().resolve().parent
            if not folder.is_dir():
                raise ValueError(
                    f"storage.study: the journal file's folder {folder} does not exist;"
                    " create it or give an RDB URL such as sqlite:///study.db"
                )
        return self
