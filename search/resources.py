"""Whether a search fits the resources it is given, and how many trials run at once."""

from __future__ import annotations

from search.config import ConfigError, ExperimentConfig

__all__ = ["check_resources", "default_concurrency", "local_gpus"]


def check_resources(config: ExperimentConfig, available: dict[str, float]) -> None:
    """Refuse a trial that asks for more than the cluster has (it would never start)."""
    resources = config.resources
    cpus = resources.workers_per_trial * resources.cpus_per_worker
    gpus = resources.workers_per_trial * resources.gpus_per_worker
    if cpus > available.get("CPU", 0):
        raise ConfigError(
            f"resources: a trial needs {cpus:g} CPUs ({resources.workers_per_trial} workers x"
            f" {resources.cpus_per_worker:g}) but Ray has {available.get('CPU', 0):g};"
            " lower resources.workers_per_trial or resources.cpus_per_worker"
        )
    if gpus > available.get("GPU", 0):
        raise ConfigError(
            f"resources: a trial needs {gpus:g} GPUs but Ray has {available.get('GPU', 0):g};"
            " set resources.gpus_per_worker to 0 or run on a cluster with GPUs"
        )


def default_concurrency(config: ExperimentConfig, available: dict[str, float]) -> int:
    resources = config.resources
    by_cpu = available.get("CPU", 1) // (resources.workers_per_trial * resources.cpus_per_worker)
    limit = int(max(1, by_cpu))
    if resources.gpus_per_worker:
        by_gpu = available.get("GPU", 0) // (
            resources.workers_per_trial * resources.gpus_per_worker
        )
        limit = min(limit, int(max(1, by_gpu)))
    return limit


def local_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - a broken CUDA setup means no usable GPU here
        return 0
