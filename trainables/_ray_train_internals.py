"""The private parts of Ray Train that a trial and its workers touch, in one place.

Written against Ray 2.60 (``ray==2.60.0`` in constraints.txt; ``pyproject.toml`` pins
the minor version); an upgrade checks these names first. Ray Train logs every report
with all its metrics at INFO from these loggers, which the workers turn down; and a
run is aborted through its controller's ``abort`` method, which Ray Train's own Ctrl-C
handler calls.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ABORT_S", "abort_train_run", "report_logger_names"]

#: Seconds an aborted Train run's controller has to exit before it is killed.
ABORT_S = 10.0


def report_logger_names() -> tuple[str, ...]:
    """The loggers through which Ray Train logs each report and checkpoint."""
    from ray.train.v2._internal.execution import context as train_context

    # The context module names its logger by file path, not by module name.
    return (
        train_context.__file__,
        "ray.train.v2._internal.execution.storage",
        "ray.train._internal.storage",
    )


def abort_train_run(controller: Any) -> None:
    """End a Train run whose trial Tune stopped: its workers stop and release their
    resources (Ray Train's own Ctrl-C path) and the controller exits. A controller
    that does not exit (it was already done, or is stuck) is killed; its workers and
    placement group go with it."""
    import ray

    try:
        ray.get(controller.abort.remote(), timeout=ABORT_S)
    except ray.exceptions.ActorDiedError:
        return  # the controller exits as it aborts
    except Exception:  # noqa: BLE001 - killed below, whatever kept it from exiting
        pass
    ray.kill(controller)
