"""The search's TPE: Optuna's multivariate, grouped TPE, minus the per-suggestion work
that grows with the study.

Every suggestion, Optuna's TPE walks the whole history in Python several times: it
adds each finished trial's distributions to the grouped search space again; it scores
every trial again (its constraints, how far a pruned one got) to split the history
into the best and the rest; and it converts each trial's parameters to their internal
form again for every group, below and above. A finished trial never changes, so
``IncrementalTPESampler`` does each of those once per trial and keeps the result. It
suggests exactly what ``TPESampler`` with the same arguments and seed suggests
(``tests/search/test_sampler.py``); what it saves is measured by
``benchmarks/searcher_scale.py`` (``docs/benchmarks.md``).

It builds on TPE's internals in Optuna 5, all imported through ``search._tpe_internals``.
"""

from __future__ import annotations

import copy
import heapq
import math
from operator import attrgetter
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import TPESampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from search._tpe_internals import (
    _get_infeasible_trial_score,
    _get_pruned_trial_score,
    _GroupDecomposedSearchSpace,
    _SearchSpaceGroup,
    _split_infeasible_trials,
    _split_trials,
    default_gamma,
    default_gamma_multiobjective,
)

__all__ = ["IncrementalTPESampler"]

_NUMBER = attrgetter("number")


def _rank(entry: tuple[Any, int, FrozenTrial]) -> tuple[Any, int]:
    return entry[0], entry[1]


# How a finished trial enters the split: by value, by how far it got, or as infeasible.
_COMPLETE, _PRUNED, _INFEASIBLE = 0, 1, 2


class _Observations:
    """Finished trials' values of one set of parameters, in TPE's internal form.

    One row per finished trial that has all of the parameters, appended as trials are
    first seen; ``index`` maps each finished trial seen to its row, or to -1 where the
    trial lacks one of the parameters.
    """

    def __init__(self, distributions: dict[str, BaseDistribution]) -> None:
        self.distributions = distributions
        self.index: dict[int, int] = {}  # trial id -> row
        self._columns: list[list[Any]] = [[] for _ in distributions]
        self._rows = 0
        self._arrays: list[np.ndarray] | None = None

    def add(self, trial_id: int, row: tuple[Any, ...] | None) -> None:
        if row is None:
            self.index[trial_id] = -1
            return
        self.index[trial_id] = self._rows
        self._rows += 1
        for column, value in zip(self._columns, row, strict=True):
            column.append(value)
        self._arrays = None

    def arrays(self) -> list[np.ndarray]:
        # A column's values all have one type (float, or int for a categorical
        # index), so a part of this array has the dtype Optuna's np.asarray of that
        # part gives.
        if self._arrays is None:
            self._arrays = [np.asarray(column) for column in self._columns]
        return self._arrays


class _IncrementalGroupDecomposedSearchSpace(_GroupDecomposedSearchSpace):
    """Adds each finished trial's distributions once.

    Optuna's version keeps the decomposition between calls but adds every finished
    trial to it again on each call. Once a trial's parameter names have been added,
    they are a union of groups, so adding them again changes neither the groups nor
    their order: skipping them gives the same decomposition.
    """

    def __init__(self, include_pruned: bool = False) -> None:
        super().__init__(include_pruned)
        self._added: set[int] = set()  # trial numbers
        self._added_from: int | None = None  # id() of the storage they came from

    def calculate(self, study: Study, use_cache: bool = False) -> _SearchSpaceGroup:
        if self._study_id is None:
            self._study_id = study._study_id
        elif self._study_id != study._study_id:
            raise ValueError("`_GroupDecomposedSearchSpace` cannot handle multiple studies.")
        if self._added_from != id(study._storage):
            # Another storage (or this one unpickled): add every trial again, as Optuna
            # does each time.
            self._added, self._added_from = set(), id(study._storage)
        states = (
            (TrialState.COMPLETE, TrialState.PRUNED)
            if self._include_pruned
            else (TrialState.COMPLETE,)
        )
        for trial in study._get_trials(deepcopy=False, states=states, use_cache=use_cache):
            if trial.number not in self._added:
                self._added.add(trial.number)
                self._search_space.add_distributions(trial.distributions)
        return copy.deepcopy(self._search_space)


class IncrementalTPESampler(TPESampler):
    """``TPESampler`` that keeps what it works out about each finished trial.

    Takes ``TPESampler``'s arguments. With ``group=True`` the grouped search space
    grows trial by trial instead of being rebuilt; in every case a finished trial's
    parameters are converted to TPE's internal form once per parameter set (one row
    per trial), and its place in the split (its value, or how far a pruned trial got)
    is worked out once, not once per suggestion.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._group_decomposed_search_space is not None:
            self._group_decomposed_search_space = _IncrementalGroupDecomposedSearchSpace(True)
        # Both caches hold finished trials of the study in ``_cached_for`` only: trial
        # ids are unique within one storage.
        self._cached_for: tuple[int, int] | None = None  # id() of the storage, study id
        # Parameter names -> the finished trials' rows of internal values.
        self._observations: dict[tuple[str, ...], _Observations] = {}
        # Trial id -> (_COMPLETE, _PRUNED or _INFEASIBLE, its sort key within those).
        self._split_keys: dict[int, tuple[int, Any]] = {}
        # Within ``sample_relative``: (trial number, trials seen, finished trials,
        # n below) -> that split, shared by the parameter groups.
        self._sampling_relative = False
        self._last_split: tuple[tuple[int, ...], tuple[list, list]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The caches are rebuilt after unpickling (Tune pickles the searcher often).
        state = self.__dict__.copy()
        state.update(
            _cached_for=None,
            _observations={},
            _split_keys={},
            _last_split=None,
            _sampling_relative=False,
        )
        return state

    def _caches_for(self, study: Study) -> None:
        """Drop what was kept of another study (or another storage's trials)."""
        if self._cached_for != (id(study._storage), study._study_id):
            self._observations, self._split_keys = {}, {}
            self._cached_for = (id(study._storage), study._study_id)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        self._sampling_relative = True
        try:
            return super().sample_relative(study, trial, search_space)
        finally:
            self._sampling_relative = False
            self._last_split = None

    def _sample(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        # Optuna's ``_sample`` as it stands, except that the split into the best trials
        # and the rest is made once per suggestion, not once per parameter group.
        if self._constant_liar:
            states = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING]
        else:
            states = [TrialState.COMPLETE, TrialState.PRUNED]
        use_cache = not self._constant_liar
        trials = study._get_trials(deepcopy=False, states=states, use_cache=use_cache)
        if self._constant_liar:
            number = trial.number
            trials = [t for t in trials if t.number != number]
        if self._gamma is None:
            if len(study.directions) <= 1:
                self._gamma = default_gamma
            else:
                self._gamma = default_gamma_multiobjective
        if self._constant_liar:
            n = sum(t.state != TrialState.RUNNING for t in trials)
        else:
            n = len(trials)  # none of them is running
        n_below = self._gamma(n)
        if self._sampling_relative:
            # Within one ``sample_relative`` call no trial changes (a trial that finished
            # or failed meanwhile, in another thread, changes the counts).
            key = (trial.number, len(trials), n, n_below)
            if self._last_split is None or self._last_split[0] != key:
                self._last_split = (key, self._split(study, trials, n_below))
            below_trials, above_trials = self._last_split[1]
        else:
            below_trials, above_trials = self._split(study, trials, n_below)

        mpe_below = self._build_parzen_estimator(
            study, search_space, below_trials, handle_below=True
        )
        mpe_above = self._build_parzen_estimator(
            study, search_space, above_trials, handle_below=False
        )
        samples_below = mpe_below.sample(self._rng.rng, self._n_ei_candidates)
        acq_func_vals = self._compute_acquisition_func(samples_below, mpe_below, mpe_above)
        ret = TPESampler._compare(samples_below, acq_func_vals)
        for param_name, dist in search_space.items():
            ret[param_name] = dist.to_external_repr(ret[param_name])
        return ret

    def _split(
        self, study: Study, trials: list[FrozenTrial], n_below: int
    ) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
        """Optuna's ``_split_trials``, from each finished trial's key worked out once.

        Optuna sorts the complete trials by value and the pruned ones by how far they
        got (both sorts stable), takes the best ``n_below`` of the complete, then of the
        pruned, then of the infeasible trials; the rest and the running trials (the
        constant liar's) are above; both sides are ordered by number. Several
        objectives go to Optuna's own split.
        """
        if len(study.directions) > 1:
            return _split_trials(study, trials, n_below)
        self._caches_for(study)
        keys = self._split_keys
        ranked: tuple[list, list] = ([], [])  # (key, position, trial) per kind
        infeasible = []
        for position, trial in enumerate(trials):
            state = trial.state
            if state == TrialState.RUNNING:
                continue  # above, whatever it may score
            if state != TrialState.COMPLETE and state != TrialState.PRUNED:
                return _split_trials(study, trials, n_below)  # Optuna's to refuse
            kind_key = keys.get(trial._trial_id)
            if kind_key is None:
                kind_key = keys[trial._trial_id] = self._split_key(study, trial)
            kind, key = kind_key
            if kind == _INFEASIBLE:
                infeasible.append(trial)
            else:
                ranked[kind].append((key, position, trial))
        below = []
        for entries in ranked:
            # Ties keep the order of ``trials``, as Optuna's stable sorts do.
            best = heapq.nsmallest(min(n_below, len(entries)), entries, key=_rank)
            below.extend(trial for _, _, trial in best)
            n_below -= len(best)
        below_infeasible, _ = _split_infeasible_trials(infeasible, n_below)
        below.extend(below_infeasible)
        chosen = {id(trial) for trial in below}
        above = [trial for trial in trials if id(trial) not in chosen]
        below.sort(key=_NUMBER)
        above.sort(key=_NUMBER)
        return below, above

    @staticmethod
    def _split_key(study: Study, trial: FrozenTrial) -> tuple[int, Any]:
        """Where a finished trial goes in the split, and its sort key there."""
        if _get_infeasible_trial_score(trial) > 0:
            return _INFEASIBLE, None
        if trial.state == TrialState.COMPLETE:
            value = trial.value
            if value is None or math.isnan(value):
                # Optuna never stores one; were it there, sorting by it is not ours to guess.
                raise ValueError(f"trial {trial.number} is complete with value {value}")
            # Ascending with ties in order is Optuna's descending sort for MAXIMIZE.
            return _COMPLETE, value if study.direction == StudyDirection.MINIMIZE else -value
        return _PRUNED, _get_pruned_trial_score(trial, study)

    def _get_internal_repr(
        self, trials: list[FrozenTrial], search_space: dict[str, BaseDistribution], study: Study
    ) -> dict[str, np.ndarray]:
        self._caches_for(study)
        names = tuple(search_space)
        observations = self._observations.get(names)
        if observations is None or observations.distributions != search_space:
            # A name's distribution changed (a new range or choices): convert afresh.
            observations = _Observations(dict(search_space))
            self._observations[names] = observations
        index = observations.index
        positions = []  # a row of ``observations``, -1 for none, -2 - k for running[k]
        running: list[tuple[Any, ...]] = []
        for trial in trials:
            if trial.state.is_finished():
                position = index.get(trial._trial_id)
                if position is None:
                    observations.add(trial._trial_id, self._row(trial, search_space, study))
                    position = index[trial._trial_id]
            else:
                # A running trial's values (the constant liar's) are read afresh each time.
                row = self._row(trial, search_space, study)
                position = -1 if row is None else -2 - len(running)
                if row is not None:
                    running.append(row)
            positions.append(position)
        columns = observations.arrays()
        rows = np.asarray(positions, dtype=np.intp)
        if running:
            finished_rows = len(columns[0]) if columns else 0
            rows = np.where(rows <= -2, finished_rows - 2 - rows, rows)
            columns = [
                np.concatenate([column, np.asarray(values, dtype=column.dtype)])
                if column.size
                else np.asarray(values)
                for column, values in zip(columns, zip(*running, strict=True), strict=True)
            ]
        rows = rows[rows >= 0]
        if rows.size == 0:
            return {name: np.asarray([]) for name in names}
        return {name: column[rows] for name, column in zip(names, columns, strict=True)}

    def _row(
        self, trial: FrozenTrial, search_space: dict[str, BaseDistribution], study: Study
    ) -> tuple[Any, ...] | None:
        """The trial's values in TPE's internal form, as Optuna converts them."""
        params = self._get_params(trial, study)
        if not search_space.keys() <= params.keys():
            return None
        return tuple(
            distribution.to_internal_repr(params[name])
            for name, distribution in search_space.items()
        )
