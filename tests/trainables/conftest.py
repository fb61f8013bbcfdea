"""Fixtures shared by the trainables tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from trainables.data import CACHE_DIR_ENV, load_dataset


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Points the disk cache at an empty folder and empties the in-process cache around a test."""
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path))
    load_dataset.cache_clear()
    yield tmp_path
    load_dataset.cache_clear()
