"""The Optuna side of a search: a searcher that tells the study what really happened.

Ray's ``OptunaSearch`` tells every trial that reported anything as COMPLETE with
its last value - a trial the scheduler stopped after two epochs then looks to TPE
like a finished recipe - and a NaN value makes its ``study.tell`` fail, so the
sampler never hears of that trial. Here a trial that did not run its plan to the
end is PRUNED, one that errored or scored NaN is FAILED (with the reason as a
user attribute), and only finished plans are COMPLETE.
"""

from __future__ import annotations

import math
from typing import Any

from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

__all__ = ["StudySearch", "trial_state"]


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
    """``OptunaSearch`` with honest trial states (see the module docstring)."""

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
                self._ot_study._storage.set_trial_user_attr(
                    frozen._trial_id,
                    "fail_reason",
                    "interrupted before the search's last saved state; not resumed",
                )
                self._ot_study.tell(frozen.number, state=TrialState.FAIL)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        state, value, reason = trial_state(result, self.metric, error)
        if reason is not None:
            ot_trial.set_user_attr("fail_reason", reason)
        if result:
            ot_trial.set_user_attr("epochs", int(result.get("epoch", 0)))
        self._ot_study.tell(ot_trial, value, state=state)
        self._completed_trials.add(trial_id)
