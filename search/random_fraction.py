"""A share of the modelled trials drawn at random instead, as BOHB and SMAC interleave
random configurations with their models' suggestions.

After its start-up, TPE proposes around the few best trials it has seen (the best 10%,
at least one). A region no start-up trial happened to sample well is then rarely tried
again, however good it is: in ``benchmarks/search_efficiency.py`` the quickstart's
highest val/acc came from long single-phase plans at a higher lr than the documents'
recipe, which Optuna's Hyperband (near-random search at 30 trials) found and
phasetune's TPE did not in 3 of 5 seeds. BOHB (Falkner et al., 2018) draws a third of
its configurations at random for this reason; SMAC interleaves random ones too.

``RandomFractionSampler`` wraps a sampler: once ``after_trials`` trials have finished,
each new trial is drawn at random with probability ``fraction``, independently of the
others (decided from the seed and the trial's number, so a seeded search repeats it),
and every other trial goes to the wrapped sampler, which still learns from the random
ones. Before ``after_trials`` nothing changes, so the start-up trials are the wrapped
sampler's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

__all__ = ["RandomFractionSampler"]

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class RandomFractionSampler(BaseSampler):
    """``base``'s suggestions, but a random trial instead with probability ``fraction``
    once ``after_trials`` trials have finished.

    Args:
        base: The sampler that proposes the other trials (and sees every trial).
        fraction: Each trial's chance of being drawn at random, in [0, 1).
        after_trials: Finished trials (complete or pruned) before any is drawn at
            random here; the base sampler's own start-up (TPE's ``n_startup_trials``).
        seed: Seeds which trials are random and their values; None: not repeatable.
    """

    def __init__(
        self,
        base: BaseSampler,
        fraction: float,
        after_trials: int,
        seed: int | None = None,
    ) -> None:
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"fraction must be in [0, 1), got {fraction}")
        self.base = base
        self.fraction = fraction
        self.after_trials = after_trials
        # One entropy for every draw of this search, kept when Tune pickles the searcher.
        self._entropy = seed if seed is not None else int(np.random.SeedSequence().entropy)
        self._random = RandomSampler(seed=None if seed is None else seed + 1)
        # Trial number -> drawn at random; decided once, when the trial is created, so
        # that trials finishing meanwhile do not change it.
        self._drawn_at_random: dict[int, bool] = {}

    def is_random(self, trial_number: int) -> bool:
        """Whether the trial was (or is being) drawn at random here."""
        return self._drawn_at_random.get(trial_number, False)

    def _decide(self, study: Study, trial: FrozenTrial) -> bool:
        drawn = self._drawn_at_random.get(trial.number)
        if drawn is None:
            finished = len(study._get_trials(deepcopy=False, states=_FINISHED, use_cache=True))
            # A generator per trial: the choice depends on the trial's number alone, not
            # on how many draws came before (a resumed search makes the same choices).
            coin = np.random.default_rng([self._entropy, trial.number]).random()
            drawn = finished >= self.after_trials and coin < self.fraction
            self._drawn_at_random[trial.number] = drawn
        return drawn

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._decide(study, trial)
        self.base.before_trial(study, trial)
        self._random.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        if self._decide(study, trial):
            return {}  # every parameter goes to ``sample_independent``
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if self._decide(study, trial):
            return {}
        return self.base.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        sampler = self._random if self._decide(study, trial) else self.base
        return sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.base.after_trial(study, trial, state, values)
        self._random.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
        self._random.reseed_rng()
