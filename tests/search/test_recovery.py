"""Repairing a search snapshot that names a checkpoint a crash left behind, without Ray running.

Each test writes one trial the way Tune leaves it on disk (``result.json``, its
``checkpoint_<n>`` folders with the engine's ``state.pt`` and ``reports.json``) and a
snapshot (``experiment_state-*.json``) built with Tune's own serialisation, then checks
what :func:`repair_missing_checkpoints` makes of it. Epoch ``e`` reports and checkpoints
into ``checkpoint_<e - 1>``; Tune's iteration runs ``OFFSET`` ahead of the epoch, as it
does after an earlier resume repeated one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from search.recovery import (
    RepairedTrial,
    _checkpoints,
    _index,
    _read_rows,
    _readable,
    _write_rows,
    repair_missing_checkpoints,
)
from trainables.engine import CHECKPOINT_FILE, CHECKPOINT_REPORTS_FILE
from trainables.storage import ExperimentStore

TRIAL = "t1"
OFFSET = 1
SNAPSHOT = "experiment_state-2026-01-01_00-00-00.json"


def _name(epoch: int) -> str:
    return f"checkpoint_{epoch - 1:06d}"


def _report(epoch: int) -> dict:
    return {"epoch": epoch, "val/acc": round(0.1 * epoch, 3), "target_score": round(0.2 * epoch, 3)}


def _row(epoch: int) -> dict:
    """A ``result.json`` row: the report as Tune logged it, with its checkpoint."""
    return {
        **_report(epoch),
        "training_iteration": epoch + OFFSET,
        "trial_id": TRIAL,
        "checkpoint_dir_name": _name(epoch),
    }


class Trial:
    """One trial's folder and the search's snapshot of it."""

    def __init__(self, root: Path) -> None:
        self.store = ExperimentStore.at(root / "exp")
        self.tune = root / "exp" / "tune"
        self.dir = self.tune / TRIAL
        self.dir.mkdir(parents=True)
        self.results = self.dir / "result.json"

    def rows(self, *epochs: int, torn: bool = False) -> None:
        text = "".join(json.dumps(_row(e)) + "\n" for e in epochs)
        self.results.write_text(text + ('{"epoch": 9, "val/a' if torn else ""))

    def checkpoint(self, epoch: int, *, reports: bool = True, cut: bool = False) -> None:
        folder = self.dir / _name(epoch)
        folder.mkdir()
        torch.save({"epoch": epoch, "weights": torch.arange(64.0)}, folder / CHECKPOINT_FILE)
        if cut:
            data = (folder / CHECKPOINT_FILE).read_bytes()
            (folder / CHECKPOINT_FILE).write_bytes(data[: len(data) // 2])
        if reports:
            history = [_report(e) for e in range(1, epoch + 1)]
            (folder / CHECKPOINT_REPORTS_FILE).write_text(json.dumps(history))

    def snapshot(self, kept: list[int], status: str = "RUNNING") -> None:
        """The snapshot names ``kept`` checkpoints, the last of them the latest."""
        from ray.train import Checkpoint, CheckpointConfig
        from ray.train._internal.checkpoint_manager import _CheckpointManager
        from ray.train._internal.session import _TrainingResult
        from ray.tune.trainable.metadata import _TrainingRunMetadata
        from ray.tune.utils.serialization import TuneFunctionEncoder

        results = [
            _TrainingResult(checkpoint=Checkpoint(path=str(self.dir / _name(e))), metrics=_row(e))
            for e in kept
        ]
        manager = _CheckpointManager(CheckpointConfig(num_to_keep=2))
        manager._checkpoint_results = list(results)
        manager._latest_checkpoint_result = results[-1]
        metadata = _TrainingRunMetadata()
        metadata.checkpoint_manager = manager
        metadata.last_result = _row(kept[-1])
        trial_state = {
            "trial_id": TRIAL,
            "status": status,
            "relative_logdir": TRIAL,
            "storage": SimpleNamespace(current_checkpoint_index=kept[-1]),
        }
        entry = [json.dumps(trial_state, cls=TuneFunctionEncoder), metadata.get_json_state()]
        (self.tune / SNAPSHOT).write_text(json.dumps({"trial_data": [entry]}))

    def recorded(self):
        """(trial state, checkpoint manager) as the snapshot now has them."""
        from ray.tune.trainable.metadata import _TrainingRunMetadata
        from ray.tune.utils.serialization import _loads_with_cloudpickle

        (entry,) = json.loads((self.tune / SNAPSHOT).read_text())["trial_data"]
        state = _loads_with_cloudpickle(entry[0])
        return state, _TrainingRunMetadata.from_json_state(entry[1]).checkpoint_manager

    def epochs(self) -> list[int]:
        return [row["epoch"] for row in _read_rows(self.store.filesystem, str(self.results))]

    def files(self) -> tuple[str, str]:
        return (self.tune / SNAPSHOT).read_text(), self.results.read_text()


@pytest.fixture
def trial(tmp_path: Path) -> Trial:
    return Trial(tmp_path)


# -- nothing to repair -----------------------------------------------------------------


def test_an_experiment_without_a_snapshot_has_nothing_to_repair(tmp_path):
    assert repair_missing_checkpoints(ExperimentStore.at(tmp_path)) == []
    (tmp_path / "tune").mkdir()
    assert repair_missing_checkpoints(ExperimentStore.at(tmp_path)) == []


def test_a_snapshot_whose_checkpoint_is_on_storage_is_left_alone(trial):
    trial.rows(1, 2)
    trial.checkpoint(1)
    trial.checkpoint(2)
    trial.snapshot(kept=[1, 2])
    before = trial.files()
    assert repair_missing_checkpoints(trial.store) == []
    assert trial.files() == before


def test_a_finished_trial_is_left_alone_even_if_its_checkpoint_is_gone(trial):
    trial.rows(1, 2)
    trial.checkpoint(3)
    trial.snapshot(kept=[1, 2], status="TERMINATED")
    before = trial.files()
    assert repair_missing_checkpoints(trial.store) == []
    assert trial.files() == before


def test_without_a_usable_newer_checkpoint_the_trial_is_left_as_it_was(trial):
    trial.rows(1, 2)
    trial.checkpoint(3, cut=True)  # cut short by the crash
    trial.snapshot(kept=[1, 2])
    before = trial.files()
    assert repair_missing_checkpoints(trial.store) == []
    assert trial.files() == before


# -- a deleted checkpoint ------------------------------------------------------------------


def test_a_deleted_checkpoint_is_replaced_by_the_oldest_newer_one(trial, caplog):
    # Snapshot after epoch 2; epochs 3 and 4 checkpointed; Tune deleted 1 and 2 (keep 2).
    trial.rows(1, 2, torn=True)
    trial.checkpoint(3)
    trial.checkpoint(4)
    trial.snapshot(kept=[1, 2])
    with caplog.at_level(logging.WARNING, logger="search.recovery"):
        repaired = repair_missing_checkpoints(trial.store)
    assert repaired == [
        RepairedTrial(
            trial_dir=f"{trial.store.root}/tune/{TRIAL}",
            missing=_name(2),
            resumes_from=_name(3),
            reason="was deleted before the crash",
        )
    ]
    (message,) = [r.getMessage() for r in caplog.records]
    assert f"({_name(2)}) was deleted before the crash; it resumes from {_name(3)}" in message

    # result.json: the torn line is gone and epoch 3 comes back from the checkpoint.
    rows = _read_rows(trial.store.filesystem, str(trial.results))
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert rows[:2] == [_row(1), _row(2)]
    assert rows[2] == _row(3)  # iteration offset, trial id and checkpoint restored

    state, manager = trial.recorded()
    latest = manager.latest_checkpoint_result
    assert Path(latest.checkpoint.path) == trial.dir / _name(3)
    assert latest.metrics == _row(3)
    # Only checkpoints still on storage stay listed; the next one goes after the newest.
    assert [Path(r.checkpoint.path).name for r in manager._checkpoint_results] == [_name(3)]
    assert state["storage"].current_checkpoint_index == 4
    assert state["status"] == "RUNNING" and state["trial_id"] == TRIAL

    # Repaired once is repaired: a second pass finds the checkpoint it names.
    after = trial.files()
    assert repair_missing_checkpoints(trial.store) == []
    assert trial.files() == after


def test_a_newer_checkpoint_cut_short_is_passed_over(trial):
    trial.rows(1, 2)
    trial.checkpoint(3, cut=True)
    trial.checkpoint(4)
    trial.snapshot(kept=[1, 2])
    (repaired,) = repair_missing_checkpoints(trial.store)
    assert (repaired.missing, repaired.resumes_from) == (_name(2), _name(4))
    assert trial.epochs() == [1, 2, 3, 4]
    _, manager = trial.recorded()
    assert manager.latest_checkpoint_result.metrics == _row(4)


def test_a_newer_checkpoint_that_cannot_say_what_it_scored_is_passed_over(trial):
    trial.rows(1, 2)
    trial.checkpoint(3, reports=False)  # no reports.json, and no row names it
    trial.checkpoint(4)
    trial.snapshot(kept=[1, 2])
    (repaired,) = repair_missing_checkpoints(trial.store)
    assert repaired.resumes_from == _name(4)


def test_without_reports_json_the_synced_row_of_the_checkpoint_is_used(trial):
    # result.json reached epoch 3 (with its checkpoint) before the crash; the snapshot not.
    trial.rows(1, 2, 3)
    trial.checkpoint(3, reports=False)
    trial.snapshot(kept=[1, 2])
    before = trial.results.read_text()
    (repaired,) = repair_missing_checkpoints(trial.store)
    assert repaired.resumes_from == _name(3)
    assert trial.results.read_text() == before  # nothing to add
    _, manager = trial.recorded()
    assert manager.latest_checkpoint_result.metrics == _row(3)


# -- an unreadable checkpoint ------------------------------------------------------------


def test_an_unreadable_recorded_checkpoint_falls_back_and_drops_the_later_rows(trial, caplog):
    trial.rows(1, 2, 3)
    trial.checkpoint(2)
    trial.checkpoint(3, cut=True)  # the snapshot's own checkpoint, cut short
    trial.snapshot(kept=[2, 3])
    with caplog.at_level(logging.WARNING, logger="search.recovery"):
        (repaired,) = repair_missing_checkpoints(trial.store)
    assert repaired.missing == _name(3) and repaired.resumes_from == _name(2)
    assert repaired.reason == "is unreadable (cut short)"
    assert "is unreadable (cut short); it falls back to" in caplog.records[0].getMessage()
    # Epoch 3 is trained again: its row goes, so the epochs still only go forward.
    assert trial.epochs() == [1, 2]
    assert not list(trial.dir.glob("*.partial"))
    state, manager = trial.recorded()
    assert Path(manager.latest_checkpoint_result.checkpoint.path).name == _name(2)
    assert manager.latest_checkpoint_result.metrics == _row(2)
    assert state["storage"].current_checkpoint_index == 3  # after the newest folder


# -- the pieces ------------------------------------------------------------------------


def test_checkpoint_folders_are_found_and_ordered_by_number(tmp_path):
    from pyarrow.fs import LocalFileSystem

    for name in ("checkpoint_10", "checkpoint_9", "checkpoint_000002", "checkpoint_tmp", "other"):
        (tmp_path / name).mkdir()
    (tmp_path / "checkpoint_11").write_text("a file, not a checkpoint")
    fs = LocalFileSystem()
    assert _checkpoints(fs, str(tmp_path)) == ["checkpoint_000002", "checkpoint_9", "checkpoint_10"]
    assert _checkpoints(fs, str(tmp_path / "missing")) == []
    assert (_index("checkpoint_000012"), _index("checkpoint_tmp"), _index("x")) == (12, -1, -1)


def test_a_state_file_is_readable_only_when_whole(tmp_path):
    from pyarrow.fs import LocalFileSystem

    fs = LocalFileSystem()
    torch.save({"w": torch.ones(32)}, tmp_path / CHECKPOINT_FILE)
    assert _readable(fs, str(tmp_path))
    data = (tmp_path / CHECKPOINT_FILE).read_bytes()
    (tmp_path / CHECKPOINT_FILE).write_bytes(data[:-40])
    assert not _readable(fs, str(tmp_path))
    assert not _readable(fs, str(tmp_path / "missing"))


def test_result_rows_round_trip_and_a_torn_last_line_is_dropped(tmp_path):
    from pyarrow.fs import LocalFileSystem

    fs, path = LocalFileSystem(), str(tmp_path / "result.json")
    assert _read_rows(fs, path) == []
    _write_rows(fs, path, [_row(1), _row(2)])
    assert _read_rows(fs, path) == [_row(1), _row(2)]
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]
    with open(path, "a") as file:
        file.write('{"epoch": 3, "val')
    assert _read_rows(fs, path) == [_row(1), _row(2)]
