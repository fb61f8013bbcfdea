"""A study's storage for the one process that writes it: the study read back from memory,
and the writes of one suggestion or one finished trial in one transaction."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
from collections.abc import Callable, Container, Iterator, Sequence
from datetime import datetime
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    check_distribution_compatibility,
    distribution_to_json,
)
from optuna.storages import BaseStorage, RDBStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import IntegrityError

from search.study._optuna_internals import models, scoped_session
from search.study._study_pass_through import StudyPassThrough

__all__ = ["SoleWriterStorage"]

logger = logging.getLogger(__name__)


class SoleWriterStorage(StudyPassThrough):
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
                with scoped_session(self._backend.scoped_session) as session:
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
                with scoped_session(backend.scoped_session) as session:
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

    # Studies: a deleted one leaves memory too, and directions are kept once read; the
    # other study calls pass straight to the backend (StudyPassThrough).

    def delete_study(self, study_id: int) -> None:
        self._flush()
        self._backend.delete_study(study_id)
        for trial in self._trials.pop(study_id, []):
            self._where.pop(trial._trial_id, None)
        self._directions.pop(study_id, None)
        self._distributions.pop(study_id, None)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        if study_id not in self._directions:
            self._directions[study_id] = self._backend.get_study_directions(study_id)
        return self._directions[study_id]
