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
import math
from collections.abc import Container
from typing import Any

from optuna.trial import FrozenTrial, TrialState
from ray.tune.search.optuna import OptunaSearch

from search.study._sole_writer import SoleWriterStorage

__all__ = [
    "NOT_RESUMED",
    "TUNE_TRIAL_ID",
    "StudySearch",
    "fail_trials_not_resumed",
    "trial_state",
]

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
