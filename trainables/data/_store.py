"""The node's data cache: decoded arrays in one file per data set, mapped read-only.

A store file holds each array uncompressed at a page boundary, then a JSON header naming
them; the first bytes say where the header is. Readers map the arrays (``numpy.memmap``
in read-only mode), so every trial and DDP worker on a node shares one copy of the pages
through the page cache, a data set larger than memory pages in from disk, and nothing is
read until a batch needs it. Writers fill the arrays in place, row by row, in a temporary
file that replaces the store's name only when complete, so readers never see a partial
store.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.atomic import made_once, replaced_atomically
from trainables.data_spec import DataError

__all__ = [
    "CACHE_DIR_ENV",
    "Store",
    "StoreWriter",
    "cache_dir",
    "cached_store",
    "open_store",
    "read_json",
    "write_json",
]

CACHE_DIR_ENV = "PHASETUNE_CACHE_DIR"

_MAGIC = b"PHASETUNE-STORE1"
_PAGE = 4096
_READABLE = 0o644
# Room left on the cache's disk beyond the store itself, for everything else on it.
_DISK_MARGIN = 64 * 2**20


def cache_dir() -> Path:
    """Where decoded data and pretrained backbones are cached (``CACHE_DIR_ENV``)."""
    return Path(os.environ.get(CACHE_DIR_ENV, Path.home() / ".cache" / "phasetune"))


class Store:
    """The arrays and lists of one store file; arrays are read-only mapped tensors."""

    def __init__(self, arrays: dict[str, torch.Tensor], lists: dict[str, list]) -> None:
        self.arrays = arrays
        self.lists = lists

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.arrays[name]

    def get(self, name: str) -> torch.Tensor | None:
        return self.arrays.get(name)


def open_store(path: Path, required: tuple[str, ...] = ()) -> Store | None:
    """Maps the store at `path`, or returns None when it is missing, unreadable or lacks
    one of the `required` arrays."""
    try:
        with open(path, "rb") as file:
            if file.read(len(_MAGIC)) != _MAGIC:
                return None
            offset, length = struct.unpack("<QQ", file.read(16))
            file.seek(offset)
            header = json.loads(file.read(length))
        size = path.stat().st_size
        arrays = {}
        for name, entry in header["arrays"].items():
            dtype, shape, offset = np.dtype(entry["dtype"]), tuple(entry["shape"]), entry["offset"]
            if offset + dtype.itemsize * int(np.prod(shape)) > size:
                return None
            arrays[name] = _mapped(path, dtype, shape, offset)
        if not set(required) <= arrays.keys():
            return None
        return Store(arrays, {name: list(value) for name, value in header["lists"].items()})
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None


def _mapped(path: Path, dtype: np.dtype, shape: tuple[int, ...], offset: int) -> torch.Tensor:
    if 0 in shape:
        return torch.from_numpy(np.zeros(shape, dtype))
    mapped = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    # torch warns that the array is not writable: that is the point, the pages are shared.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(mapped)


class StoreWriter:
    """Fills a new store file: fixed-size arrays in place, small ones given at the end.

    Args:
        path: The store's final name.
        reserved: Per array written row by row: (dtype, shape with the most rows it may
            need); `finish` keeps the rows actually written.
        extra_bytes: Room to reserve for the arrays given to `finish`.

    Raises:
        DataError: the cache's disk has too little free space for the store.
    """

    def __init__(
        self,
        path: Path,
        reserved: dict[str, tuple[np.dtype | type, tuple[int, ...]]],
        extra_bytes: int = 0,
    ) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        layout, offset = {}, _PAGE  # the first page says where the header is
        for name, (dtype, shape) in reserved.items():
            dtype = np.dtype(dtype)
            layout[name] = (dtype, shape, offset)
            offset = _aligned(offset + dtype.itemsize * int(np.prod(shape)))
        self._layout = layout
        self._end = offset
        _check_free_space(path.parent, offset + extra_bytes)
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
        self._temp = Path(temp)
        self._maps: dict[str, np.memmap] = {}
        try:
            os.truncate(self._temp, offset)
            for name, (dtype, shape, start) in layout.items():
                if 0 not in shape:
                    self._maps[name] = np.memmap(
                        self._temp, dtype=dtype, mode="r+", offset=start, shape=shape
                    )
        except BaseException:
            self.abort()
            raise

    def array(self, name: str) -> np.ndarray:
        """The writable map of a reserved array."""
        return self._maps[name]

    def finish(
        self,
        rows: int,
        extra: dict[str, np.ndarray] | None = None,
        lists: dict[str, list] | None = None,
    ) -> None:
        """Keeps the first `rows` rows of every reserved array, appends `extra`, and puts
        the file in place."""
        header: dict[str, Any] = {"arrays": {}, "lists": lists or {}}
        for name, (dtype, shape, start) in self._layout.items():
            if name in self._maps:
                self._maps[name].flush()
            header["arrays"][name] = {
                "dtype": dtype.str,
                "shape": [rows, *shape[1:]],
                "offset": start,
            }
        self._maps.clear()
        offset = self._end
        with open(self._temp, "r+b") as file:
            for name, array in (extra or {}).items():
                array = np.ascontiguousarray(array)
                file.seek(offset)
                file.write(array.tobytes())
                header["arrays"][name] = {
                    "dtype": array.dtype.str,
                    "shape": list(array.shape),
                    "offset": offset,
                }
                offset = _aligned(offset + array.nbytes)
            # The header goes last: its size (class names, skipped files) is known only now.
            encoded = json.dumps(header).encode()
            file.seek(offset)
            file.write(encoded)
            file.seek(0)
            file.write(_MAGIC + struct.pack("<QQ", offset, len(encoded)))
            file.flush()
            os.fsync(file.fileno())
        # Readable as a plain file would be (mkstemp makes it private to its writer).
        os.chmod(self._temp, _READABLE)
        os.replace(self._temp, self.path)

    def abort(self) -> None:
        self._maps.clear()
        self._temp.unlink(missing_ok=True)


def _aligned(offset: int) -> int:
    return -(-offset // _PAGE) * _PAGE


def _check_free_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if needed + _DISK_MARGIN > free:
        raise DataError(
            f"dataset: decoding needs {_gib(needed + _DISK_MARGIN)} free in {folder}, which has"
            f" {_gib(free)}; free space there or point {CACHE_DIR_ENV} at a larger disk"
        )


def _gib(count: int) -> str:
    return f"{count / 2**30:.2f} GiB"


def cached_store(path: Path, make: Callable[[Path], None], required: tuple[str, ...] = ()) -> Store:
    """Maps the store at `path`, making it first if needed while holding its lock.

    Concurrent trials on a node thus wait for one of them to make the data, then map
    the file; later ones map it without locking. ``make(path)`` writes the store (with a
    `StoreWriter`).
    """
    # Locks live apart from the data, so the data folder holds only finished files.
    lock = cache_dir() / "locks" / f"{path.name}.lock"
    store = made_once(lambda: open_store(path, required), lambda: make(path), lock)
    if store is None:
        raise DataError(f"dataset: the decoded data at {path} cannot be read back")
    return store


def read_json(path: Path) -> Any:
    """The JSON document at `path`, or None when missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, document: Any) -> None:
    """Writes atomically so that concurrent readers never see a partial file."""
    with replaced_atomically(path, mode=_READABLE) as partial, partial.open("w") as file:
        json.dump(document, file)
