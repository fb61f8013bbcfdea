"""The private parts of Optuna's TPE that ``IncrementalTPESampler`` builds on, in one place.

Written against Optuna 5.0 (``optuna==5.0.0`` in constraints.txt; ``pyproject.toml``
pins the major version); an upgrade checks these names first, and
``tests/search/test_sampler.py`` checks that the sampler still suggests what
``TPESampler`` does.
"""

from __future__ import annotations

from optuna.samplers._tpe.sampler import (
    _get_infeasible_trial_score,
    _get_pruned_trial_score,
    _split_infeasible_trials,
    _split_trials,
    default_gamma,
    default_gamma_multiobjective,
)
from optuna.search_space.group_decomposed import _GroupDecomposedSearchSpace, _SearchSpaceGroup

__all__ = [
    "_GroupDecomposedSearchSpace",
    "_SearchSpaceGroup",
    "_get_infeasible_trial_score",
    "_get_pruned_trial_score",
    "_split_infeasible_trials",
    "_split_trials",
    "default_gamma",
    "default_gamma_multiobjective",
]
