"""Experiment storage without a server: the local disk and pyarrow's in-memory filesystem.

A ``mock://`` URI is remote to phasetune (it is not this machine's disk) and resolves to
pyarrow's in-memory filesystem, so the object-store code paths run without S3. Each
resolution of such a URI is a fresh, empty filesystem: a test keeps to one store.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from trainables.storage import (
    ExperimentStore,
    TensorboardMirror,
    filesystem_and_path,
    is_remote,
    join_location,
    local_path,
)

MOCK = "mock:///bucket/results/exp"


def _files(store: ExperimentStore, under: str | None = None) -> list[str]:
    root = under or store.root
    selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
    infos = store.filesystem.get_file_info(selector)
    return sorted(i.path[len(root) + 1 :] for i in infos if i.type == pafs.FileType.File)


# -- locations ---------------------------------------------------------------------------


def test_local_locations_resolve_to_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert local_path("rel/x") == tmp_path / "rel" / "x"
    assert local_path(f"file://{tmp_path}/a%20b") == tmp_path / "a b"
    assert local_path("~/y") == Path.home().resolve() / "y"
    assert join_location("rel", "e", "f") == str(tmp_path / "rel" / "e" / "f")
    assert join_location(f"file://{tmp_path}", "e") == str(tmp_path / "e")
    assert join_location("gs://b", "e") == "gs://b/e"
    assert join_location("s3://b/p/?region=x&scheme=http", "e") == "s3://b/p/e?region=x&scheme=http"


def test_filesystem_and_path_is_none_locally_and_the_uris_filesystem_otherwise(tmp_path):
    assert filesystem_and_path(str(tmp_path)) == (None, str(tmp_path))
    assert filesystem_and_path(f"file://{tmp_path}/x") == (None, str(tmp_path / "x"))
    filesystem, path = filesystem_and_path("mock:///bucket/p")
    assert isinstance(filesystem, pafs.FileSystem) and path == "bucket/p"


def test_a_uri_without_a_host_stays_remote_when_joined():
    location = join_location("hdfs:///user/me/results", "exp")
    assert is_remote(location)
    assert location == "hdfs:///user/me/results/exp"
    # With a host and options, as before.
    assert join_location("s3://bucket/a?region=x", "b", "c") == "s3://bucket/a/b/c?region=x"


# -- a local experiment --------------------------------------------------------------------


def test_a_local_store_is_made_written_read_and_checked(tmp_path):
    store = ExperimentStore.at(f"file://{tmp_path}/exp")
    assert store.location == str(tmp_path / "exp") and not store.remote
    assert store.uri("best.yaml") == str(tmp_path / "exp" / "best.yaml")
    assert not store.exists()
    store.make()
    assert store.exists() and (tmp_path / "exp").is_dir()
    store.write_text("plans/t1.json", '{"a": 1}')
    assert store.read_text("plans/t1.json") == '{"a": 1}'
    assert (tmp_path / "exp" / "plans" / "t1.json").read_text() == '{"a": 1}'
    assert store.is_file("plans/t1.json")
    assert not store.is_file("plans") and not store.is_file("missing.json")
    store.write_text("plans/t1.json", "replaced")
    assert store.read_text("plans/t1.json") == "replaced"
    # Written through a rename: no partial file is left beside it.
    assert sorted(p.name for p in (tmp_path / "exp" / "plans").iterdir()) == ["t1.json"]
    with pytest.raises(FileNotFoundError):
        store.read_text("missing.json")


def test_a_local_store_uploads_files_and_folders(tmp_path):
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "a.txt").write_text("A")
    (source / "sub" / "b.txt").write_text("B")
    store = ExperimentStore.at(tmp_path / "exp")
    store.make()
    store.upload(source / "a.txt", "copied.txt")
    store.upload(source, "report")
    assert store.read_text("copied.txt") == "A"
    assert _files(store) == ["copied.txt", "report/a.txt", "report/sub/b.txt"]
    assert (source / "a.txt").read_text() == "A"  # a copy, not a move


def test_a_local_store_moves_to_a_new_location(tmp_path):
    store = ExperimentStore.at(tmp_path / "exp")
    store.make()
    store.write_text("best.yaml", "x: 1\n")
    store.move_to(str(tmp_path / "exp.replaced-1"))
    assert not store.exists()
    moved = ExperimentStore.at(tmp_path / "exp.replaced-1")
    assert moved.read_text("best.yaml") == "x: 1\n"


# -- a remote experiment (in memory) ------------------------------------------------------


def test_a_remote_store_keeps_its_uri_and_resolves_a_path_inside_the_filesystem():
    store = ExperimentStore.at(f"{MOCK}?opt=1")
    assert store.remote and store.location == f"{MOCK}?opt=1"
    assert store.root == "bucket/results/exp"
    assert store.uri("tune", "t1").endswith("bucket/results/exp/tune/t1?opt=1")


def test_a_remote_store_writes_reads_uploads_and_moves(tmp_path):
    store = ExperimentStore.at(MOCK)
    assert not store.exists()
    store.make()
    assert store.exists()
    store.write_text("ranking.json", "[]")
    assert store.read_text("ranking.json") == "[]" and store.is_file("ranking.json")
    assert not store.is_file("nothing.json")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "report.md").write_text("# r")
    store.upload(tmp_path / "report", "report")
    assert _files(store) == ["ranking.json", "report/report.md"]
    # No rename of a folder in an object store: copied to the new place, then removed.
    store.move_to("mock:///bucket/results/exp.replaced-1")
    assert not store.exists()
    moved_root = "bucket/results/exp.replaced-1"
    assert _files(store, moved_root) == ["ranking.json", "report/report.md"]


# -- TensorBoard mirror ---------------------------------------------------------------------


def test_the_mirror_copies_events_on_sync_and_on_exit_then_cleans_up(tmp_path):
    remote = tmp_path / "remote" / "t1"
    with TensorboardMirror(str(remote), interval_s=3600) as mirror:
        local = Path(mirror.local)
        assert local.is_dir() and local != remote
        mirror.sync()
        assert not remote.exists()  # nothing written yet: nothing created
        (local / "events.1").write_bytes(b"one")
        mirror.sync()
        assert (remote / "events.1").read_bytes() == b"one"
        (local / "events.1").write_bytes(b"one two")
        (local / "events.2").write_bytes(b"three")
    assert (remote / "events.1").read_bytes() == b"one two"
    assert (remote / "events.2").read_bytes() == b"three"
    assert not local.exists()


def test_the_mirror_copies_in_the_background_every_interval(tmp_path):
    remote = tmp_path / "remote"
    mirror = TensorboardMirror(str(remote), interval_s=0.05)
    (Path(mirror.local) / "events").write_bytes(b"x")
    copied = threading.Event()
    sync = mirror.sync

    def sync_and_say() -> None:
        sync()
        copied.set()

    mirror.sync = sync_and_say  # the background thread's copies, observed
    with mirror:
        assert copied.wait(10), "no background copy within 10 s of a 0.05 s interval"
        assert (remote / "events").read_bytes() == b"x"


def test_a_failed_copy_is_logged_not_raised(tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    remote = str(blocker / "t1")
    mirror = TensorboardMirror(remote, interval_s=3600)
    (Path(mirror.local) / "events").write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="trainables.storage"), mirror:
        mirror.sync()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and all(f"could not copy TensorBoard events to {remote}" in w for w in warnings)
    assert len(warnings) == 2  # the explicit sync and the one on exit
    assert not Path(mirror.local).exists()
