"""Where a study lives: Optuna's RDB storage, and a SQLite file on a local disk in
write-ahead-log mode."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from optuna.storages import RDBStorage
from sqlalchemy import event
from sqlalchemy.engine import make_url

__all__ = [
    "LOCAL_FILE_SYSTEMS",
    "LocalSQLiteStorage",
    "checkpoint_study",
    "local_sqlite_file",
    "on_local_disk",
    "rdb_storage",
]

#: File systems where SQLite's write-ahead log is safe: local disks. Its index is
#: shared memory, which network file systems (NFS, SMB, Lustre...) cannot share
#: between machines.
LOCAL_FILE_SYSTEMS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "jfs", "tmpfs", "overlay"}
)


def on_local_disk(path: str | Path, mounts: str | Path = "/proc/mounts") -> bool:
    """Whether ``path`` lies on a local file system (False where that cannot be told,
    e.g. without ``/proc/mounts``)."""
    try:
        lines = Path(mounts).read_text().splitlines()
    except OSError:
        return False
    resolved = Path(path).expanduser().resolve()
    fstype, longest = None, -1
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        # Spaces in mount points are written as \040.
        mount = Path(fields[1].replace("\\040", " "))
        if (mount == resolved or mount in resolved.parents) and len(mount.parts) > longest:
            fstype, longest = fields[2], len(mount.parts)
    return fstype in LOCAL_FILE_SYSTEMS


class LocalSQLiteStorage(RDBStorage):
    """A SQLite study on a local disk, in WAL mode with ``synchronous=NORMAL``.

    By default every commit waits for the disk twice (~3 ms each here, ~18 commits
    per trial). In WAL mode a commit appends to the log and only checkpoints wait:
    a crashed process loses nothing, a power cut at most the last commits, and
    readers (``phasetune status``, optuna-dashboard) no longer block the writer.
    """

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self._log_ahead()

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._log_ahead()

    def _log_ahead(self) -> None:
        event.listen(self.engine, "connect", _wal_pragmas)
        # Connections opened while the tables were made lack the pragmas.
        self.engine.dispose()


def _wal_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def local_sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite ``url`` on a local disk; None for anything else."""
    database = make_url(url).database if url.startswith("sqlite") else None
    if database and database != ":memory:" and on_local_disk(Path(database).parent):
        return Path(database)
    return None


def rdb_storage(url: str) -> RDBStorage:
    """Optuna's RDB storage for ``url``; a SQLite file on a local disk in WAL mode."""
    return LocalSQLiteStorage(url) if local_sqlite_file(url) else RDBStorage(url)


def checkpoint_study(study: str) -> None:
    """Fold a local SQLite study's write-ahead log back into its database file, so
    that the file alone is the study (at the end of a search)."""
    database = local_sqlite_file(study)
    if database is not None and database.exists():
        with contextlib.closing(sqlite3.connect(database)) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
