"""Files replaced in one rename, so that a reader (or a crash) never meets half of one;
and files made once per node behind a lock.

The one home of the patterns that the store, the best-config export, the pretrained
backbone cache, the experiment's own files and the local retrain checkpoint share.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

__all__ = ["made_once", "replaced_atomically"]


@contextmanager
def replaced_atomically(path: str | os.PathLike[str], mode: int | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; when the block ends, it replaces
    ``path`` in one rename (an error removes it instead).

    Args:
        mode: Permission bits to give the file (default: as the writer created it).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Unique per writer: two processes replacing the same file never share a temporary.
    partial = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    try:
        yield partial
        if mode is not None:
            os.chmod(partial, mode)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def made_once(ready: Callable[[], T | None], make: Callable[[], None], lock: Path) -> T | None:
    """What ``ready()`` finds, made first by ``make()`` if it finds nothing.

    Concurrent trials on a node wait on the file lock ``lock`` for the one that makes it,
    then find it made; a later call finds it without locking. None where ``make()``
    left nothing that ``ready()`` finds.
    """
    from filelock import FileLock

    found = ready()
    if found is not None:
        return found
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock)):
        found = ready()
        if found is None:
            make()
            found = ready()
    return found
