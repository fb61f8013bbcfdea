"""Where a search's files live: a local directory, or a URI pyarrow's filesystems accept.

A plain path and a ``file://`` URI are this machine's disk (a shared mount on a
cluster) and are used as they are. Any other URI (``s3://``, ``gs://``, ``hdfs://``,
...) goes through ``pyarrow.fs``; options such as ``?endpoint_override=...`` stay
part of the URI, so every process that is handed it (trials on other nodes,
``phasetune status`` later) resolves the same filesystem.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import shutil
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from trainables.atomic import replaced_atomically

logger = logging.getLogger(__name__)

__all__ = [
    "ExperimentStore",
    "TensorboardMirror",
    "filesystem_and_path",
    "is_remote",
    "local_copy",
    "join_location",
    "local_path",
]


def is_remote(location: str | os.PathLike[str]) -> bool:
    """True for a URI of a filesystem other than this machine's (``s3://``, ``gs://``)."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def local_path(location: str | os.PathLike[str]) -> Path:
    """The absolute local path of a plain path or a ``file://`` URI."""
    text = str(location)
    if text.startswith("file://"):
        text = urllib.parse.unquote(urllib.parse.urlsplit(text).path)
    return Path(text).expanduser().resolve()


def join_location(location: str, *names: str) -> str:
    """``location/name/...``, keeping a URI's query options at its end."""
    if not is_remote(location):
        return str(local_path(location).joinpath(*names))
    parts = urllib.parse.urlsplit(location)
    path = "/".join([parts.path.rstrip("/"), *names])
    joined = urllib.parse.urlunsplit(parts._replace(path=path))
    if not parts.netloc:
        # urlunsplit writes a URI without a host (hdfs:///path) as scheme:/path, which
        # no longer reads as remote; the empty authority goes back in.
        joined = f"{parts.scheme}://" + joined.removeprefix(f"{parts.scheme}:")
    return joined


def filesystem_and_path(location: str) -> tuple[pafs.FileSystem | None, str]:
    """What Ray's ``storage_filesystem`` and ``storage_path`` take for ``location``:
    no filesystem and the local path, or the URI's filesystem and the path inside it."""
    if not is_remote(location):
        return None, str(local_path(location))
    return pafs.FileSystem.from_uri(location)


@contextlib.contextmanager
def local_copy(location: str | os.PathLike[str]) -> Iterator[Path]:
    """A local path holding the file at ``location``: the file itself where it is local,
    else a temporary copy of a remote one, removed when the block ends (for readers
    that take only local paths)."""
    if not is_remote(location):
        # A plain path as given, so that messages name it as the user wrote it.
        yield Path(location) if "://" not in str(location) else local_path(location)
        return
    filesystem, path = pafs.FileSystem.from_uri(str(location))
    with tempfile.TemporaryDirectory(prefix="phasetune-copy-") as staging:
        copy = Path(staging, path.rsplit("/", 1)[-1])
        with filesystem.open_input_stream(path) as stream:
            copy.write_bytes(stream.read())
        yield copy


@dataclasses.dataclass(frozen=True)
class ExperimentStore:
    """One experiment directory, local or behind a URI.

    Attributes:
        location: The absolute local path, or the URI (with its options): what
            ``phasetune status/analyze/report/export`` take back.
    """

    location: str

    @classmethod
    def at(cls, location: str | os.PathLike[str]) -> ExperimentStore:
        text = str(location)
        return cls(text if is_remote(text) else str(local_path(text)))

    @property
    def remote(self) -> bool:
        return is_remote(self.location)

    @functools.cached_property
    def _resolved(self) -> tuple[pafs.FileSystem, str]:
        if self.remote:
            return pafs.FileSystem.from_uri(self.location)
        return pafs.LocalFileSystem(), self.location

    @property
    def filesystem(self) -> pafs.FileSystem:
        return self._resolved[0]

    @property
    def root(self) -> str:
        """The directory inside :attr:`filesystem`."""
        return self._resolved[1]

    def uri(self, *names: str) -> str:
        return join_location(self.location, *names)

    def exists(self) -> bool:
        return self.filesystem.get_file_info(self.root).type != pafs.FileType.NotFound

    def is_file(self, name: str) -> bool:
        info = self.filesystem.get_file_info(f"{self.root}/{name}")
        return info.type == pafs.FileType.File

    def read_text(self, name: str) -> str:
        with self.filesystem.open_input_stream(f"{self.root}/{name}") as stream:
            return stream.read().decode()

    def write_text(self, name: str, text: str) -> None:
        """Write a file; locally through a rename, so a reader never sees half of it
        (an object store's upload is atomic already)."""
        if not self.remote:
            with replaced_atomically(Path(self.root, name)) as partial:
                partial.write_text(text)
            return
        with self.filesystem.open_output_stream(f"{self.root}/{name}") as stream:
            stream.write(text.encode())

    def upload(self, source: str | os.PathLike[str], name: str) -> None:
        """Copy a local file or directory to ``name`` in the experiment."""
        target = f"{self.root}/{name}"
        if Path(source).is_dir():
            self.filesystem.create_dir(target, recursive=True)
        pafs.copy_files(
            str(Path(source).resolve()),
            target,
            source_filesystem=pafs.LocalFileSystem(),
            destination_filesystem=self.filesystem,
        )

    def make(self) -> None:
        self.filesystem.create_dir(self.root, recursive=True)

    def move_to(self, location: str) -> None:
        """Move the experiment to ``location`` on the same filesystem (an object store
        has no rename of a folder: it is copied, then the original removed)."""
        target = ExperimentStore.at(location)
        if not self.remote:
            shutil.move(self.root, target.root)
            return
        pafs.copy_files(
            self.root,
            target.root,
            source_filesystem=self.filesystem,
            destination_filesystem=self.filesystem,
        )
        self.filesystem.delete_dir(self.root)


class TensorboardMirror:
    """TensorBoard events written to a local folder and copied to a remote one.

    ``SummaryWriter`` writes only to local files. The copy runs every
    ``interval_s`` in the background, on :meth:`sync`, and once more on exit, so a
    trial a scheduler stops still leaves all but its last few seconds behind.
    """

    def __init__(self, remote: str, interval_s: float = 10.0) -> None:
        self.remote = remote
        self.interval_s = interval_s
        self.local = tempfile.mkdtemp(prefix="phasetune-tensorboard-")
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TensorboardMirror:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.sync()
        shutil.rmtree(self.local, ignore_errors=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sync()

    def sync(self) -> None:
        """Copy the events written so far; a failed copy is logged, not raised (the
        trial's metrics reach Tune either way, and the next copy repeats it)."""
        with self._lock:
            if not any(Path(self.local).iterdir()):
                return
            try:
                filesystem, path = pafs.FileSystem.from_uri(self.remote)
                filesystem.create_dir(path, recursive=True)
                pafs.copy_files(
                    self.local,
                    path,
                    source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=filesystem,
                )
            except OSError as error:
                logger.warning("could not copy TensorBoard events to %s: %s", self.remote, error)
