"""The search's TPE: Optuna's multivariate, grouped TPE, minus the per-suggestion work
that grows with the study.

Every suggestion, Optuna's TPE walks the whole history in Python several times: it
adds each finished trial's distributions to the grouped search space again, and it
converts each trial's parameters to their internal form again for every group, below
and above. A finished trial never changes, so ``IncrementalTPESampler`` does each of
those once per trial and keeps the result. It suggests exactly what ``TPESampler``
with the same arguments and seed suggests (``tests/search/test_sampler.py``); at
1,000 trials a suggestion of the search took 41.9 ms with it against 76.9 ms with
``TPESampler`` (``benchmarks/searcher_scale.py``, ``docs/benchmarks.md``).

It builds on TPE's internals in Optuna 5; ``pyproject.toml`` pins the major version.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import TPESampler
from optuna.samplers._tpe.sampler import (
    _split_trials,
    default_gamma,
    default_gamma_multiobjective,
)
from optuna.search_space.group_decomposed import _GroupDecomposedSearchSpace, _SearchSpaceGroup
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

__all__ = ["IncrementalTPESampler"]

_MISSING = object()


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
    per trial), not once per suggestion.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._group_decomposed_search_space is not None:
            self._group_decomposed_search_space = _IncrementalGroupDecomposedSearchSpace(True)
        # Parameter names -> (their distributions, trial id -> row of internal values,
        # or None where the trial lacks one of them).
        self._rows: dict[
            tuple[str, ...],
            tuple[dict[str, BaseDistribution], dict[int, tuple[Any, ...] | None]],
        ] = {}
        self._rows_for: tuple[int, int] | None = None  # id() of the storage, study id
        # Within ``sample_relative``: (trial number, trials seen, finished trials,
        # n below) -> that split, shared by the parameter groups.
        self._sampling_relative = False
        self._last_split: tuple[tuple[int, ...], tuple[list, list]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The caches are rebuilt after unpickling (Tune pickles the searcher often).
        state = self.__dict__.copy()
        state.update(_rows={}, _rows_for=None, _last_split=None, _sampling_relative=False)
        return state

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
            trials = [t for t in trials if trial.number != t.number]
        if self._gamma is None:
            if len(study.directions) <= 1:
                self._gamma = default_gamma
            else:
                self._gamma = default_gamma_multiobjective
        n = sum(t.state != TrialState.RUNNING for t in trials)
        n_below = self._gamma(n)
        if self._sampling_relative:
            # Within one ``sample_relative`` call no trial changes (a trial that finished
            # or failed meanwhile, in another thread, changes the counts).
            key = (trial.number, len(trials), n, n_below)
            if self._last_split is None or self._last_split[0] != key:
                self._last_split = (key, _split_trials(study, trials, n_below))
            below_trials, above_trials = self._last_split[1]
        else:
            below_trials, above_trials = _split_trials(study, trials, n_below)

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

    def _get_internal_repr(
        self, trials: list[FrozenTrial], search_space: dict[str, BaseDistribution], study: Study
    ) -> dict[str, np.ndarray]:
        if self._rows_for != (id(study._storage), study._study_id):
            # Trial ids are only unique within one storage.
            self._rows, self._rows_for = {}, (id(study._storage), study._study_id)
        names = tuple(search_space)
        known = self._rows.get(names)
        if known is None or known[0] != search_space:
            # A name's distribution changed (a new range or choices): convert afresh.
            known = (dict(search_space), {})
            self._rows[names] = known
        rows = known[1]
        table = []
        for trial in trials:
            row = rows.get(trial._trial_id, _MISSING) if trial.state.is_finished() else _MISSING
            if row is _MISSING:
                row = self._row(trial, search_space, study)
                if trial.state.is_finished():
                    rows[trial._trial_id] = row
            if row is not None:
                table.append(row)
        if not table:
            return {name: np.asarray([]) for name in names}
        return {
            name: np.asarray(column)
            for name, column in zip(names, zip(*table, strict=True), strict=True)
        }

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
