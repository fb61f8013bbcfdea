"""The Optuna side of a search: a searcher that tells the study what really happened.

Ray's ``OptunaSearch`` tells every trial that reported anything as COMPLETE with
its last value - a trial the scheduler stopped after two epochs then looks to TPE
like a finished recipe - and a NaN value makes its ``study.tell`` fail, so the
sampler never hears of that trial. Here a trial that did not run its plan to the
end is PRUNED, one that errored or scored NaN is FAILED (with the reason as a
user attribute), and only finished plans are COMPLETE.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import sqlite3
from collections.abc import Callable, Container, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    check_distribution_compatibility,
    distribution_to_json,
)
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState
from ray.tune.search.optuna import OptunaSearch
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

__all__ = [
    "NOT_RESUMED",
    "TUNE_TRIAL_ID",
    "LocalSQLiteStorage",
    "SoleWriterStorage",
    "StudySearch",
    "checkpoint_study",
    "fail_trials_not_resumed",
    "local_sqlite_file",
    "on_local_disk",
    "rdb_storage",
    "trial_state",
]

logger = logging.getLogger(__name__)

#: The user attribute that names a study trial's Tune trial.
TUNE_TRIAL_ID = "tune_trial_id"

#: Why a trial that a crash interrupted, and that was not resumed, is failed.
NOT_RESUMED = "interrupted before the search's last saved state; not resumed"


def trial_state(
    result: dict[str, Any] | None, metric: str | list[str], error: bool
) -> tuple[TrialState, float | list[float] | None, str | None]:
    """Optuna state, value(s) and failure reason for a finished Tune trial.

    ``metric`` is one name, or a list for a multi-objective study (one value each).
    """
    if error:
        return TrialState.FAIL, None, "the trial raised an error (see its error.txt)"
    names = metric if isinstance(metric, list) else [metric]
    values = []
    for name in names:
        value = (result or {}).get(name)
        if value is None:
            return TrialState.FAIL, None, f"the trial reported no {name}"
        if not math.isfinite(value):
            return TrialState.FAIL, None, f"{name} is {value}: the run diverged"
        values.append(float(value))
    if not result.get("plan_complete"):
        return TrialState.PRUNED, None, None
    return TrialState.COMPLETE, values if isinstance(metric, list) else values[0], None


class StudySearch(OptunaSearch):
    """``OptunaSearch`` with honest trial states (see the module docstring).

    Over a ``SoleWriterStorage``, a suggestion's parameters and a finished trial's
    attributes are each written in one transaction.
    """

    def _batched(self) -> contextlib.AbstractContextManager[None]:
        storage = self._ot_study._storage if self._ot_study is not None else None
        return (
            storage.batched()
            if isinstance(storage, SoleWriterStorage)
            else contextlib.nullcontext()
        )

    def suggest(self, trial_id: str) -> dict | None:
        with self._batched():
            config = super().suggest(trial_id)
            if trial_id in self._ot_trials:
                # Which Tune trial a study trial is: after a resume, the study trials
                # whose Tune trial did not come back are found by it.
                self._ot_trials[trial_id].set_user_attr(TUNE_TRIAL_ID, trial_id)
            return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._ot_trials or trial_id in self._completed_trials:
            return
        if isinstance(self.metric, list):
            # Optuna takes no intermediate values in a multi-objective study.
            return
        value = result.get(self.metric)
        # Optuna refuses non-finite intermediate values; the trial ends failed anyway.
        if value is not None and math.isfinite(value):
            self._ot_trials[trial_id].report(value, int(result.get("epoch", 0)))

    def restore(self, checkpoint_path: str) -> None:
        """Restore as saved, then line the searcher up with the persisted study.

        Tune's snapshot can be older than the study. A trial the study already
        holds as finished may come back as running and report again: it is marked
        completed here, so the study is not told twice. Trials the sampler asked for
        after the snapshot are not resumed (Tune proposes new ones instead); left
        RUNNING they would sit in the study forever and skew what the sampler learns.
        """
        super().restore(checkpoint_path)
        stored = {t._trial_id: t for t in self._ot_study.get_trials(deepcopy=False)}
        for tune_id, ot_trial in self._ot_trials.items():
            if stored[ot_trial._trial_id].state.is_finished():
                self._completed_trials.add(tune_id)
        known = {trial._trial_id for trial in self._ot_trials.values()}
        for frozen in stored.values():
            if frozen.state == TrialState.RUNNING and frozen._trial_id not in known:
                _fail_not_resumed(self._ot_study, frozen)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        state, value, reason = trial_state(result, self.metric, error)
        with self._batched():
            if reason is not None:
                ot_trial.set_user_attr("fail_reason", reason)
            if result:
                ot_trial.set_user_attr("epochs", int(result.get("epoch", 0)))
        self._ot_study.tell(ot_trial, value, state=state)
        self._completed_trials.add(trial_id)


def _fail_not_resumed(study: Any, trial: FrozenTrial) -> None:
    study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", NOT_RESUMED)
    study.tell(trial.number, state=TrialState.FAIL)


def fail_trials_not_resumed(study: Any, tune_trial_ids: Container[str]) -> list[int]:
    """Fail the study's RUNNING trials whose Tune trial is not among ``tune_trial_ids``.

    Tune's snapshot of a search can miss a trial that its searcher's snapshot, taken
    in the same breath, already holds: Tune records a new trial only once it has
    something to record. After a crash such a trial is not resumed (Tune proposes
    another in its place) while the restored searcher still waits for it; once the
    resumed search has ended, it is failed here. Returns the failed trials' numbers.
    """
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        tune_id = trial.user_attrs.get(TUNE_TRIAL_ID)
        if tune_id is not None and tune_id not in tune_trial_ids:
            _fail_not_resumed(study, trial)
            failed.append(trial.number)
    return failed


class SoleWriterStorage(BaseStorage):
    """A study's storage for the one process that writes it: writes go through at
    once, reads of trials come from memory.

    The sampler reads every trial back several times per suggestion; from SQLite
    each read costs ~10 ms, and Optuna's own cache still asks the database for the
    trials it holds as unfinished, in case another process wrote them. During a
    search the driver is the study's only writer (``phasetune status`` and
    optuna-dashboard only read), so a copy kept in step with its own writes is
    exact. The copy is loaded from the backend on the first read of a study and is
    not pickled: a searcher restored by ``phasetune resume`` reads the study afresh.

    Writes reach the backend before the copy, except within ``batched()``: there a
    trial's parameters, attributes and intermediate values are held and written
    together when the block ends (one transaction on an RDB, where each costs a
    commit), or before any other write or read of the backend. On an RDB, a value
    the copy says is new is inserted as it is: the backend's own write would first
    read the trial and the value back to check what the copy already knows.
    """

    def __init__(self, backend: BaseStorage) -> None:
        self._backend = backend
        self._trials: dict[int, list[FrozenTrial]] = {}  # study id -> trials by number
        self._where: dict[int, tuple[int, int]] = {}  # trial id -> (study id, number)
        self._directions: dict[int, list[StudyDirection]] = {}
        # study id -> parameter name -> the distribution it was first stored with.
        self._distributions: dict[int, dict[str, BaseDistribution]] = {}
        # Within ``batched()``: each held write, alone and within an RDB session.
        self._held: list[tuple[Callable[[], None], Callable[[Any], None]]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"_backend": self._backend}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["_backend"])

    # Batched writes.

    @contextlib.contextmanager
    def batched(self) -> Iterator[None]:
        """Hold the trials' parameter, attribute and intermediate-value writes until
        the block ends, and write them together (see the class docstring)."""
        if self._held is not None:  # already within a batch
            yield
            return
        self._held = []
        try:
            yield
        except BaseException:
            # What the block wrote before it failed is kept, as unbatched; the block's
            # error is the one that matters.
            try:
                self._flush()
            except Exception as error:
                logger.warning("could not write to the study after an error: %s", error)
            raise
        else:
            self._flush()
        finally:
            self._held = None

    def _flush(self) -> None:
        """Write what is held, in order."""
        if not self._held:
            return
        held, self._held = self._held, []
        together = isinstance(self._backend, RDBStorage) and len(held) > 1
        try:
            if together:
                with _create_scoped_session(self._backend.scoped_session) as session:
                    for _, in_session in held:
                        in_session(session)
            else:
                for alone, _ in held:
                    alone()
            return
        except Exception:
            # The copy holds writes the backend refused: read the study afresh from now on.
            self._forget()
            if not together:
                raise
        # The transaction was rolled back: write them one at a time, as unbatched (the
        # first that fails again raises).
        for alone, _ in held:
            alone()

    def _forget(self) -> None:
        """Drop the copy; the next read loads it from the backend."""
        self._trials.clear()
        self._where.clear()
        self._distributions.clear()

    def _write(self, alone: Callable[[], None], in_session: Callable[[Any], None]) -> None:
        if self._held is None:
            alone()
        else:
            self._held.append((alone, in_session))

    # Trials: reads from the copy, writes to the backend and then the copy.

    def _study_trials(self, study_id: int) -> list[FrozenTrial]:
        if study_id not in self._trials:
            self._flush()
            # Copies: Optuna edits the trials it is handed, the backend's own included.
            trials = self._backend.get_all_trials(study_id, deepcopy=True)
            self._trials[study_id] = sorted(trials, key=lambda trial: trial.number)
            distributions = self._distributions.setdefault(study_id, {})
            for trial in self._trials[study_id]:
                self._where[trial._trial_id] = (study_id, trial.number)
                for name, distribution in trial.distributions.items():
                    distributions.setdefault(name, distribution)
        return self._trials[study_id]

    def _cached(self, trial_id: int) -> FrozenTrial | None:
        if trial_id not in self._where:
            return None
        study_id, number = self._where[trial_id]
        return self._trials[study_id][number]

    def _replace(self, trial: FrozenTrial) -> None:
        # A new object, never an edit: lists handed out earlier stay as they were.
        study_id, number = self._where[trial._trial_id]
        self._trials[study_id][number] = trial

    def _merge(self, trial_id: int, **entries: dict[Any, Any]) -> None:
        """Add ``entries`` to the copy's dict attributes of the trial (new dicts)."""
        trial = self._cached(trial_id)
        if trial is not None:
            trial = copy.copy(trial)
            for attribute, added in entries.items():
                setattr(trial, attribute, {**getattr(trial, attribute), **added})
            self._replace(trial)

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trials = self._study_trials(study_id)
        self._flush()
        if isinstance(self._backend, RDBStorage) and template_trial is None:
            # The new, empty trial as written, without reading it back (a template's
            # attributes are read back: the database stores them as JSON).
            trial = copy.deepcopy(self._backend._create_new_trial(study_id))
        else:
            trial = copy.deepcopy(
                self._backend.get_trial(self._backend.create_new_trial(study_id, template_trial))
            )
        if trial.number != len(trials):  # someone else wrote the study: read it again
            self._trials.pop(study_id)
            self._study_trials(study_id)
        else:
            trials.append(trial)
            self._where[trial._trial_id] = (study_id, trial.number)
            distributions = self._distributions.setdefault(study_id, {})
            for name, distribution in trial.distributions.items():
                distributions.setdefault(name, distribution)
        return trial._trial_id

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        backend = self._backend
        trial = self._cached(trial_id)

        def alone() -> None:
            backend.set_trial_param(trial_id, param_name, param_value_internal, distribution)

        known = trial is not None and param_name in self._distributions[self._where[trial_id][0]]
        if trial is not None:
            # Raised now, as the backend would, not when a batch is written.
            backend.check_trial_is_updatable(trial_id, trial.state)
            study_distributions = self._distributions[self._where[trial_id][0]]
            first = study_distributions.setdefault(param_name, distribution)
            check_distribution_compatibility(first, distribution)
        if known:  # checked above against the copy, which is what the backend holds
            self._write_new_row(
                lambda: models.TrialParamModel(
                    trial_id=trial_id,
                    param_name=param_name,
                    param_value=param_value_internal,
                    distribution_json=distribution_to_json(distribution),
                ),
                alone,
            )
        else:  # the backend checks it against the study's other trials
            self._write(
                alone,
                lambda session: backend._set_trial_param_without_commit(
                    session, trial_id, param_name, param_value_internal, distribution
                ),
            )
        self._merge(
            trial_id,
            params={param_name: distribution.to_external_repr(param_value_internal)},
            distributions={param_name: distribution},
        )

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        self._flush()
        changed = self._backend.set_trial_state_values(trial_id, state, values)
        trial = self._cached(trial_id)
        if changed and trial is not None:
            trial = copy.copy(trial)
            trial.state = state
            if values is not None:
                trial.values = list(values)
            if state == TrialState.RUNNING:
                trial.datetime_start = datetime.now()
            if state.is_finished():
                trial.datetime_complete = datetime.now()
            self._replace(trial)
        return changed

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        backend = self._backend
        trial = self._cached(trial_id)
        if trial is not None and step not in trial.intermediate_values:
            backend.check_trial_is_updatable(trial_id, trial.state)
            stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(
                intermediate_value
            )
            self._write_new_row(
                lambda: models.TrialIntermediateValueModel(
                    trial_id=trial_id,
                    step=step,
                    intermediate_value=stored,
                    intermediate_value_type=kind,
                ),
                lambda: backend.set_trial_intermediate_value(trial_id, step, intermediate_value),
            )
        else:
            self._write(
                lambda: backend.set_trial_intermediate_value(trial_id, step, intermediate_value),
                lambda session: backend._set_trial_intermediate_value_without_commit(
                    session, trial_id, step, intermediate_value
                ),
            )
        self._merge(trial_id, intermediate_values={step: intermediate_value})

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._set_trial_attr(
            trial_id,
            key,
            value,
            models.TrialUserAttributeModel,
            "user_attrs",
            lambda: self._backend.set_trial_user_attr(trial_id, key, value),
        )

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._set_trial_attr(
            trial_id,
            key,
            value,
            models.TrialSystemAttributeModel,
            "system_attrs",
            lambda: self._backend.set_trial_system_attr(trial_id, key, value),
        )

    def _set_trial_attr(
        self,
        trial_id: int,
        key: str,
        value: Any,
        model: type[models.TrialUserAttributeModel | models.TrialSystemAttributeModel],
        attribute: str,
        alone: Callable[[], None],
    ) -> None:
        """Set a user or system attribute (``attribute`` names the trial's dict of them;
        ``alone`` is the backend's own write)."""
        backend = self._backend
        trial = self._cached(trial_id)
        if trial is not None and key not in getattr(trial, attribute):
            backend.check_trial_is_updatable(trial_id, trial.state)
            value_json = json.dumps(value)  # raised now for what JSON cannot write
            self._write_new_row(
                lambda: model(trial_id=trial_id, key=key, value_json=value_json), alone
            )
        else:
            self._write(
                alone,
                lambda session: backend._set_trial_attr_without_commit(
                    session, model, trial_id, key, value
                ),
            )
        self._merge(trial_id, **{attribute: {key: value}})

    def _write_new_row(self, new_row: Callable[[], Any], alone: Callable[[], None]) -> None:
        """Add the row ``new_row`` makes: one the copy says is new, to a trial it says
        can be updated (``alone`` is the backend's own write of it).

        The backend's own write reads the trial and the row back first, to check both;
        the copy is what the backend holds, so on an RDB the row is added as it is.
        """
        backend = self._backend
        if not isinstance(backend, RDBStorage):
            self._write(alone, lambda session: None)
            return

        def insert() -> None:
            try:
                with _create_scoped_session(backend.scoped_session) as session:
                    session.add(new_row())
            except IntegrityError:
                # The row is there after all (written elsewhere): the backend's own write
                # replaces it, as an unchecked write would have.
                self._forget()
                alone()

        self._write(insert, lambda session: session.add(new_row()))

    def get_trial(self, trial_id: int) -> FrozenTrial:
        trial = self._cached(trial_id)
        if trial is not None:
            return trial
        self._flush()
        return self._backend.get_trial(trial_id)

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        trials = self._study_trials(study_id)
        trials = [t for t in trials if t.state in states] if states is not None else list(trials)
        return copy.deepcopy(trials) if deepcopy else trials

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        trials = self._study_trials(study_id)
        if 0 <= trial_number < len(trials):
            return trials[trial_number]._trial_id
        self._flush()
        return self._backend.get_trial_id_from_study_id_trial_number(study_id, trial_number)

    # Studies: straight to the backend (rarely called), directions kept once read.

    def create_new_study(
        self, directions: Sequence[StudyDirection], study_name: str | None = None
    ) -> int:
        return self._backend.create_new_study(directions, study_name)

    def delete_study(self, study_id: int) -> None:
        self._flush()
        self._backend.delete_study(study_id)
        for trial in self._trials.pop(study_id, []):
            self._where.pop(trial._trial_id, None)
        self._directions.pop(study_id, None)
        self._distributions.pop(study_id, None)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._backend.set_study_user_attr(study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._backend.set_study_system_attr(study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._backend.get_study_id_from_name(study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._backend.get_study_name_from_id(study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        if study_id not in self._directions:
            self._directions[study_id] = self._backend.get_study_directions(study_id)
        return self._directions[study_id]

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._backend.get_study_user_attrs(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._backend.get_study_system_attrs(study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._backend.get_all_studies()


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
