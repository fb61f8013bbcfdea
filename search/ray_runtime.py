"""Ray for a search: the environment phasetune needs, and starting or joining a cluster."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from search.config import ConfigError

__all__ = [
    "RAY_ENVIRONMENT",
    "STATE_API_WARNING",
    "cluster_address",
    "configure_runtime",
    "ray_running",
    "ray_stage",
    "start_ray",
    "state_api_answers",
]


#: Ray settings phasetune needs, applied unless the user set them already.
RAY_ENVIRONMENT = {
    # Each ray.train.report otherwise waits for the controller's 2 s poll.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
    # phasetune writes its own TensorBoard events (per-task tags, HParams at
    # trial start); Tune's copies would show every scalar twice.
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_DEDUP_LOGS": "1",
    # The old output engine is the one that stays silent at verbose=0; phasetune
    # prints its own line per trial event.
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_RESULT_BUFFER_LENGTH": "1",
    # Train workers keep print() as it is: the patch logs every print even inside
    # contextlib.redirect_stdout, so pycocotools' progress lines on each
    # evaluation could not be silenced.
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    # Keeping two checkpoints per trial forces an experiment snapshot when a trial
    # has written two more; for small trials that is often and cheap, not a problem.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    # A DDP trial that Tune stops aborts its Train run before its thread ends
    # (trainables._report_relay); Tune waits this long for that thread before it gives
    # the actor to the next trial, and a reset that times out errors that trial.
    "TUNE_FUNCTION_THREAD_TIMEOUT_S": "30",
}


class _AlreadyDeletedCheckpoint(logging.Filter):
    """Drops Tune's error for deleting a checkpoint that is already gone.

    After a crash the restored experiment state can list a checkpoint the trial had
    already rotated out; Tune then logs a traceback while deleting it again,
    although nothing is lost.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        deleting = "Error handling checkpoint" in str(record.msg)
        return not (deleting and isinstance(error, FileNotFoundError))


def configure_runtime() -> None:
    """Environment and logging defaults for a quiet, fast local run."""
    for name, value in RAY_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Ray's default (token authentication on a local cluster) is kept; only its
    # notice on every start is not repeated to the user.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.ERROR
    )
    controller = logging.getLogger("ray.tune.execution.tune_controller")
    if not any(isinstance(f, _AlreadyDeletedCheckpoint) for f in controller.filters):
        controller.addFilter(_AlreadyDeletedCheckpoint())


def cluster_address(address: str | None = None) -> str | None:
    """The Ray cluster to join: ``address`` if given, else ``RAY_ADDRESS`` (which a
    Ray job's entrypoint has set), else None for a Ray of this process's own."""
    return address or os.environ.get("RAY_ADDRESS") or None


def _cluster_runtime_env() -> dict[str, Any]:
    """``RAY_ENVIRONMENT`` for a cluster's processes, which do not inherit ours.

    Inside a Ray job, Ray refuses a variable that the job's own runtime_env sets
    too, so those are left to the job.
    """
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR

    job = json.loads(os.environ.get(RAY_JOB_CONFIG_JSON_ENV_VAR, "{}"))
    taken = set((job.get("runtime_env") or {}).get("env_vars") or {})
    return {"env_vars": {k: os.environ[k] for k in RAY_ENVIRONMENT if k not in taken}}


def start_ray(num_cpus: int | None = None, address: str | None = None) -> bool:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), else start Ray here.

    Raises:
        ConfigError: nothing answers at the address.

    Returns:
        True when this call initialised Ray in this process, so the caller calls
        ``ray.shutdown()``: that stops a Ray started here, but only disconnects
        from a cluster that was joined, which keeps running.
    """
    import ray

    if ray.is_initialized():
        return False
    configure_runtime()
    address = cluster_address(address)
    if address:
        try:
            ray.init(
                address=address,
                runtime_env=_cluster_runtime_env(),
                logging_level=logging.WARNING,
            )
        except ConnectionError as error:
            raise ConfigError(
                f"address: no Ray cluster to join at {address!r} (from --address or"
                f" RAY_ADDRESS): {error}; start one with `ray start --head`, fix the"
                " address, or unset RAY_ADDRESS to run on a Ray of this machine"
            ) from None
    else:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            logging_level=logging.WARNING,
        )
    return True


def ray_stage(address: str | None) -> str:
    joined = cluster_address(address)
    return f"joining the Ray cluster at {joined}" if joined else "starting Ray"


@contextmanager
def ray_running(address: str | None = None) -> Iterator[None]:
    """Ray for the duration of the block: reused if already up, else joined at
    ``address`` (or started here) and let go afterwards."""
    import ray

    started = start_ray(address=address)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


#: Said before a DDP search on a cluster whose state API does not answer.
STATE_API_WARNING = (
    "warning: this Ray cluster's state API does not answer (is its dashboard off, or"
    " another Ray running on this machine without RAY_ADDRESS set?);"
    " Ray Train then cannot free the workers of a DDP trial that is stopped early, and"
    " the trials after it may fail to start"
)


def state_api_answers() -> bool:
    """Whether Ray's state API answers: Ray Train frees the placement group of a Train
    run whose controller died (a DDP trial Tune stopped) only after asking it."""
    from ray.util.state import list_actors

    try:
        list_actors(limit=1, timeout=10, raise_on_missing_output=False)
    except Exception:  # noqa: BLE001 - any failure means the same: it does not answer
        return False
    return True
