"""A search whose storage fills up stops at once and says so, instead of failing every
trial after it one by one."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.stopper import Stopper

__all__ = ["StopWhenStorageIsFull", "StorageFull", "is_storage_full"]

#: What the errors of a full disk (or a used-up quota) say, however deep in a trial's
#: traceback they were raised.
_MESSAGES = ("No space left on device", "Disk quota exceeded", "database or disk is full")


class StorageFull(Exception):
    """The experiment's storage has no room left; the message names it (one line)."""

    def __init__(self, location: str) -> None:
        super().__init__(
            f"{location}: the storage is full (no space left on device); the trials that"
            " finished are kept there. Free some space, then continue with:"
            f" phasetune resume {location}"
        )


def is_storage_full(error: BaseException | str | None) -> bool:
    """Whether ``error`` (an exception, or a trial's error text) is a full disk."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(error, BaseException):
        cause = error.__cause__ or error.__context__
        return any(m in str(error) for m in _MESSAGES) or (
            cause is not None and is_storage_full(cause)
        )
    return error is not None and any(m in error for m in _MESSAGES)


class StopWhenStorageIsFull(Callback, Stopper):
    """Stops the whole search when a trial fails because the storage is full: every
    trial after it would fail the same way."""

    def __init__(self) -> None:
        self.full = False

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        error_file = getattr(trial, "error_file", None)
        text = _read(error_file) if error_file else None
        if is_storage_full(text):
            self.full = True

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.full


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None
