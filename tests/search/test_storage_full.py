"""A search whose storage fills up: one line naming it, a non-zero exit, and the
trials that finished before kept whole and resumable."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
import time
import zipfile

import pytest
import yaml

from search.storage_full import StorageFull, is_storage_full

EXPERIMENT = {
    "name": "full",
    "dataset": {"num_samples": 360, "image_size": 16, "num_classes": 6},
    "model": {"width": 4, "pretrain": {"num_samples": 400, "epochs": 1}},
    "strategies": {
        "progressive": {"space": {"frozen_epochs": 1, "partial_epochs": 1, "full_epochs": 1}},
        "single_phase": {"space": {"epochs": 3, "early_stopping_patience": 0}},
    },
    "search": {"num_samples": 2, "scheduler": "fifo", "max_concurrent_trials": 1},
}


@pytest.mark.parametrize(
    ("error", "full"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), True),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
        (RuntimeError("OSError: [Errno 28] No space left on device: '/x/state.pt'"), True),
        ("sqlite3.OperationalError: database or disk is full", True),
        (OSError(errno.EACCES, "Permission denied"), False),
        ("RuntimeError: a bug", False),
        (None, False),
    ],
)
def test_a_full_disk_is_recognised_however_it_is_reported(error, full):
    assert is_storage_full(error) is full


def test_the_message_is_one_line_naming_the_storage_and_how_to_go_on():
    message = str(StorageFull("/data/results/full"))
    assert "\n" not in message
    assert message.startswith("/data/results/full: the storage is full")
    assert message.endswith("phasetune resume /data/results/full")


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB tmpfs, or a skip where this machine does not let the tests mount one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip() or done.returncode}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder) -> None:
    """Write until the disk has no byte left (unbuffered: nothing is left to flush)."""
    handle = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(handle, b"\0" * size)
            except OSError as error:
                assert error.errno == errno.ENOSPC
    finally:
        os.close(handle)


def _finished(result_file) -> bool:
    if not result_file.exists():
        return False
    lines = [line for line in result_file.read_text().splitlines() if line.strip()]
    return any(json.loads(line).get("plan_complete") for line in lines[-1:])


@pytest.mark.slow
def test_a_search_that_fills_its_storage_stops_in_one_line_and_resumes(ray_session, small_disk):
    experiment = small_disk.parent / "experiment.yaml"
    experiment.write_text(yaml.safe_dump({**EXPERIMENT, "storage": {"path": str(small_disk)}}))
    env = dict(os.environ, RAY_ADDRESS=ray_session.get_runtime_context().gcs_address)
    run = subprocess.Popen(
        [sys.executable, "-m", "search", "run", str(experiment)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    tune_dir = small_disk / "full" / "tune"
    deadline = time.monotonic() + 240
    first = None
    while first is None and time.monotonic() < deadline:
        first = next((d for d in tune_dir.glob("*") if _finished(d / "result.json")), None)
        if first is None:
            # Returns at once if the search ends: then the assertion below says why.
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.wait(timeout=0.05)
            if run.returncode is not None:
                break
    assert first is not None, "the first trial never finished"
    _fill(small_disk)
    out, err = run.communicate(timeout=240)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert run.returncode == 1, (out, err)
    assert len(lines) == 1 and f"{small_disk / 'full'}: the storage is full" in lines[0], err
    # The finished trial is whole: every epoch reported, its last checkpoint readable.
    rows = [json.loads(line) for line in (first / "result.json").read_text().splitlines()]
    assert rows[-1]["plan_complete"] == 1
    newest = sorted(first.glob("checkpoint_*"))[-1] / "state.pt"
    with zipfile.ZipFile(newest) as archive:
        assert archive.testzip() is None
    # Room again: the search continues to its configured trials.
    (small_disk / "filler").unlink()
    resumed = subprocess.run(
        [sys.executable, "-m", "search", "resume", str(small_disk / "full")],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    import pyarrow.parquet as pq

    trials = pq.read_table(small_disk / "full" / "results.parquet").to_pylist()
    assert sorted(t["strategy"] for t in trials) == ["progressive", "single_phase"]
    assert all(t["status"] == "done" for t in trials), [t["status"] for t in trials]
