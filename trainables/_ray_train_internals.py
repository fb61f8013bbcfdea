"""The private parts of Ray Train that a trial's workers touch, in one place.

Written against Ray 2.60 (``ray==2.60.0`` in constraints.txt; ``pyproject.toml`` pins
the minor version); an upgrade checks these names first. Ray Train logs every report
with all its metrics at INFO from these loggers, which the workers turn down.
"""

from __future__ import annotations

__all__ = ["report_logger_names"]


def report_logger_names() -> tuple[str, ...]:
    """The loggers through which Ray Train logs each report and checkpoint."""
    from ray.train.v2._internal.execution import context as train_context

    # The context module names its logger by file path, not by module name.
    return (
        train_context.__file__,
        "ray.train.v2._internal.execution.storage",
        "ray.train._internal.storage",
    )
