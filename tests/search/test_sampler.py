"""The search's TPE suggests exactly what Optuna's TPE suggests, for less work."""

from __future__ import annotations

import math
import warnings

import optuna
import pytest
from optuna.trial import TrialState

from search.config import ExperimentConfig
from search.sampler import IncrementalTPESampler

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _score(params: dict) -> float:
    lr = next((v for k, v in params.items() if k.endswith("lr")), 1e-3)
    return math.exp(-((math.log10(lr) + 3) ** 2))


def _phasetune_space(trial: optuna.Trial) -> None:
    ExperimentConfig().search_space().define_by_run(trial)


def _shifting_space(trial: optuna.Trial) -> None:
    # The range of "x" widens after ten trials, and "y" only exists for some trials.
    x = trial.suggest_float("x", 0.0, 1.0 if trial.number < 10 else 2.0)
    if x > 0.5:
        trial.suggest_int("y", 1, 8, log=True)
    trial.suggest_categorical("z", ["a", "b", "c"])


def _drive(sampler_class, space, objectives: int = 1, trials: int = 36, **kwargs) -> list:
    """Trials asked two at a time (the earlier told after the later is asked, as with
    two concurrent Tune trials), in turn complete, pruned after reporting, failed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sampler = sampler_class(seed=7, n_startup_trials=5, **kwargs)
        study = optuna.create_study(directions=["maximize"] * objectives, sampler=sampler)
        suggested, running = [], None
        for _ in range(trials):
            trial = study.ask()
            space(trial)
            suggested.append(dict(trial.params))
            if running is not None:
                score = _score(running.params) + running.params.get("x", 0.0)
                if running.number % 5 == 3:
                    study.tell(running, state=TrialState.FAIL)
                elif running.number % 2 and objectives == 1:
                    running.report(score / 2, 1)
                    study.tell(running, state=TrialState.PRUNED)
                else:
                    study.tell(running, [score, -score / 3][:objectives])
            running = trial
    return suggested


@pytest.mark.parametrize(
    "space", [_phasetune_space, _shifting_space], ids=["phasetune", "shifting"]
)
@pytest.mark.parametrize(
    "kwargs",
    [
        {"multivariate": True, "group": True},
        {"multivariate": True, "group": True, "constant_liar": False},
        {"multivariate": True},
        {},
    ],
    ids=["grouped", "grouped-no-liar", "multivariate", "independent"],
)
def test_incremental_tpe_suggests_what_optunas_tpe_suggests(space, kwargs):
    expected = _drive(optuna.samplers.TPESampler, space, **kwargs)
    assert _drive(IncrementalTPESampler, space, **kwargs) == expected
    # Not the random startup alone: TPE modelled most of these.
    assert len({str(params) for params in expected}) == len(expected)


def test_incremental_tpe_suggests_what_optunas_tpe_suggests_for_two_objectives():
    kwargs = {"multivariate": True, "group": True}
    expected = _drive(optuna.samplers.TPESampler, _phasetune_space, objectives=2, **kwargs)
    assert _drive(IncrementalTPESampler, _phasetune_space, objectives=2, **kwargs) == expected


def test_incremental_tpe_converts_each_finished_trial_once(monkeypatch):
    converted = []
    row = IncrementalTPESampler._row

    def counting_row(self, trial, search_space, study):
        if trial.state.is_finished():
            converted.append((trial.number, tuple(search_space)))
        return row(self, trial, search_space, study)

    monkeypatch.setattr(IncrementalTPESampler, "_row", counting_row)
    _drive(IncrementalTPESampler, _phasetune_space, multivariate=True, group=True)
    # Optuna converts every finished trial again for every suggestion and group, below
    # and above; here once per trial and group.
    assert converted
    assert len(converted) == len(set(converted))


def _late_independent_draw(sampler_class) -> float:
    """A trial draws a parameter on its own after other trials changed around it: one
    running trial failed and an enqueued one started, so the counts are unchanged."""
    sampler = sampler_class(seed=3, n_startup_trials=4, multivariate=True, group=True)
    study = optuna.create_study(sampler=sampler)
    for _ in range(6):
        trial = study.ask()
        study.tell(trial, (trial.suggest_float("x", 0, 1) - 0.3) ** 2)
    failing = study.ask()
    failing.suggest_float("x", 0, 1)
    late = study.ask()
    late.suggest_float("x", 0, 1)
    study.tell(failing, state=TrialState.FAIL)
    study.enqueue_trial({"x": 0.5, "z": 0.95})
    enqueued = study.ask()
    enqueued.suggest_float("x", 0, 1)
    enqueued.suggest_float("z", 0, 1)
    return late.suggest_float("z", 0, 1)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_later_draw_of_the_same_trial_sees_the_study_as_it_is_then():
    expected = _late_independent_draw(optuna.samplers.TPESampler)
    assert _late_independent_draw(IncrementalTPESampler) == expected


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_sampler_reused_for_a_second_study_forgets_the_first(tmp_path):
    def two_studies(sampler_class) -> list:
        sampler = sampler_class(seed=2, n_startup_trials=3, multivariate=True, group=True)
        drawn = []
        for _ in range(2):  # in-memory studies: trial ids and numbers start at 0 again
            study = optuna.create_study(sampler=sampler)
            for _ in range(8):
                trial = study.ask()
                drawn.append(trial.suggest_float("x", 0, 1))
                study.tell(trial, abs(drawn[-1] - 0.8))
        return drawn

    assert two_studies(IncrementalTPESampler) == two_studies(optuna.samplers.TPESampler)


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_pickled_sampler_goes_on_as_the_original(tmp_path):
    import pickle

    storage = f"sqlite:///{tmp_path}/s.db"
    sampler = IncrementalTPESampler(seed=4, n_startup_trials=4, multivariate=True, group=True)
    study = optuna.create_study(study_name="p", storage=storage, sampler=sampler)
    for _ in range(10):
        trial = study.ask()
        _phasetune_space(trial)
        study.tell(trial, _score(trial.params))
    snapshot = pickle.dumps(sampler)
    assert len(snapshot) < 20_000  # the caches are left out; they are rebuilt

    def go_on(sampler) -> list:
        study = optuna.load_study(study_name="p", storage=storage, sampler=sampler)
        trial = study.ask()
        _phasetune_space(trial)
        params = dict(trial.params)
        study.tell(trial, state=TrialState.FAIL)  # so that both go on from the same study
        return params

    assert go_on(pickle.loads(snapshot)) == go_on(sampler)


def _tied_study(direction: str, infeasible: bool) -> optuna.Study:
    """Complete trials that tie on their values, pruned ones that tie on the step and
    value they stopped at (one stopped before reporting), some infeasible, two running."""
    from optuna.study._constrained_optimization import _CONSTRAINTS_KEY

    study = optuna.create_study(direction=direction, sampler=optuna.samplers.RandomSampler(0))
    for i in range(40):
        trial = study.ask()
        x = round(trial.suggest_float("x", 0.0, 1.0), 1)
        if infeasible:
            violation = [1.0 + x] if i % 7 == 0 else [-1.0]
            study._storage.set_trial_system_attr(trial._trial_id, _CONSTRAINTS_KEY, violation)
        if i % 3 == 0:
            if i != 9:
                trial.report(x, step=1 + i % 2)
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, x if i % 3 == 1 else 0.5)
        if i in (12, 30):
            study.ask()  # left running, as with the constant liar
    return study


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
@pytest.mark.parametrize("infeasible", [False, True], ids=["feasible", "some-infeasible"])
def test_the_split_into_best_and_rest_is_optunas(direction, infeasible):
    from optuna.samplers._tpe.sampler import _split_trials

    study = _tied_study(direction, infeasible)
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    trials = study._get_trials(deepcopy=False, states=states, use_cache=False)
    sampler = IncrementalTPESampler(seed=0)
    for n_below in [*range(len(trials) + 2), 3, 0]:  # later calls read the kept keys
        below, above = sampler._split(study, trials, n_below)
        expected_below, expected_above = _split_trials(study, trials, n_below)
        assert [t.number for t in below] == [t.number for t in expected_below]
        assert [t.number for t in above] == [t.number for t in expected_above]
