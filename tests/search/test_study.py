"""The study hears what happened to each trial: complete, pruned or failed."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState

from search.sampler import IncrementalTPESampler
from search.study import trial_state


@pytest.mark.parametrize(
    ("result", "error", "state", "value"),
    [
        ({"target_score": 0.9, "plan_complete": 1}, False, TrialState.COMPLETE, 0.9),
        ({"target_score": 0.4, "plan_complete": 0}, False, TrialState.PRUNED, None),
        ({"target_score": math.nan, "plan_complete": 1}, False, TrialState.FAIL, None),
        ({"target_score": 0.9, "plan_complete": 0}, True, TrialState.FAIL, None),
        (None, True, TrialState.FAIL, None),
        ({"epoch": 1}, False, TrialState.FAIL, None),
    ],
)
def test_trial_state(result, error, state, value):
    got_state, got_value, reason = trial_state(result, "target_score", error)
    assert got_state == state
    assert got_value == value
    assert (reason is None) == (state != TrialState.FAIL)


def _suggested(seed: int, storage_path) -> list[dict]:
    import optuna

    from search.config import ExperimentConfig
    from search.study import StudySearch

    space = ExperimentConfig().search_space()
    searcher = StudySearch(
        space=space.define_by_run,
        metric="target_score",
        mode="max",
        points_to_evaluate=space.points_to_evaluate(),
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=4),
        study_name="repro",
        storage=optuna.storages.RDBStorage(f"sqlite:///{storage_path}"),
    )
    configs = []
    for i in range(8):
        config = searcher.suggest(f"t{i}")
        configs.append(config)
        # A made-up score that depends on the config, so TPE has something to model.
        score = 1.0 if config["strategy"] == "progressive" else 0.5
        searcher.on_trial_complete(f"t{i}", {"target_score": score, "plan_complete": 1})
    return configs


def test_one_seed_gives_identical_trial_parameters(tmp_path):
    first = _suggested(0, tmp_path / "a.db")
    assert first == _suggested(0, tmp_path / "b.db")
    assert first != _suggested(1, tmp_path / "c.db")
    # The documents' recipes come first, whatever the seed.
    assert first[0]["progressive"]["base_lr"] == 1e-3
    assert first[1]["single_phase"]["lr"] == 1e-4


def _backend(kind: str, path):
    """The storage a search's study has (Optuna wraps an RDB in its cache where it is
    handed one; the search hands it ``SoleWriterStorage`` around this)."""
    from search.searcher import study_storage

    location = f"sqlite:///{path}.db" if kind == "sqlite" else f"{path}.journal"
    return study_storage(location)


def _drive(storage, trials: int = 12) -> list[dict]:
    """A seeded TPE search over ``storage`` whose trials finish, are pruned, diverge
    or error in turn; the configs it suggested."""
    import optuna

    from search.config import ExperimentConfig
    from search.study import StudySearch

    space = ExperimentConfig().search_space()
    searcher = StudySearch(
        space=space.define_by_run,
        metric="target_score",
        mode="max",
        points_to_evaluate=space.points_to_evaluate()[:2],
        sampler=optuna.samplers.TPESampler(seed=3, n_startup_trials=4, multivariate=True),
        study_name="mirror",
        storage=storage,
    )
    configs = []
    for i in range(trials):
        trial_id = f"t{i}"
        configs.append(searcher.suggest(trial_id))
        score = 1.0 if configs[-1]["strategy"] == "progressive" else 0.5
        outcome = i % 4
        for epoch in (1, 2):
            value = math.nan if outcome == 2 and epoch == 2 else score * epoch / 2
            result = {"target_score": value, "epoch": epoch, "plan_complete": int(outcome == 0)}
            searcher.on_trial_result(trial_id, result)
        searcher.on_trial_complete(trial_id, result, error=outcome == 3)
    return configs


def _stored(storage) -> list[tuple]:
    """What a fresh reader of ``storage`` sees of study "mirror"."""
    import optuna

    study = optuna.load_study(study_name="mirror", storage=storage)
    return [
        (t.number, t.state, t.params, t.values, t.intermediate_values, t.user_attrs)
        for t in study.get_trials(deepcopy=False)
    ]


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_the_sole_writer_storage_suggests_and_stores_what_its_backend_would(kind, tmp_path):
    from search.study import SoleWriterStorage

    plain = _drive(_backend(kind, tmp_path / "plain"))
    storage = SoleWriterStorage(_backend(kind, tmp_path / "mirrored"))
    assert _drive(storage) == plain
    stored = _stored(_backend(kind, tmp_path / "mirrored"))
    assert stored == _stored(_backend(kind, tmp_path / "plain"))
    # Its copy holds what the backend holds.
    assert _stored(storage) == stored
    states = [state for _, state, *_ in stored]
    assert {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL} <= set(states)


def test_the_sole_writer_storage_reads_its_backend_once(tmp_path, monkeypatch):
    from search.study import SoleWriterStorage

    backend = _backend("sqlite", tmp_path / "s")
    reads = []
    read = backend.get_all_trials
    monkeypatch.setattr(backend, "get_all_trials", lambda *a, **k: reads.append(1) or read(*a, **k))
    _drive(SoleWriterStorage(backend), trials=8)
    # Without the copy TPE reads every trial back several times per suggestion.
    assert len(reads) == 1


def test_the_sole_writer_storage_rereads_a_study_written_elsewhere(tmp_path):
    import pickle

    import optuna

    from search.study import SoleWriterStorage

    storage = SoleWriterStorage(_backend("sqlite", tmp_path / "s"))
    study = optuna.create_study(study_name="mirror", storage=storage)
    study.enqueue_trial({"x": 1.0})
    assert len(study.get_trials()) == 1
    # Another process (a driver before a crash) adds a trial behind the copy's back.
    elsewhere = optuna.load_study(study_name="mirror", storage=_backend("sqlite", tmp_path / "s"))
    elsewhere.enqueue_trial({"x": 2.0})

    # Unpickled, as ``phasetune resume`` restores the searcher: read afresh.
    restored = pickle.loads(pickle.dumps(storage))
    fixed = [t.system_attrs["fixed_params"] for t in restored.get_all_trials(study._study_id)]
    assert fixed == [{"x": 1.0}, {"x": 2.0}]
    # Not unpickled: its next new trial's number shows the gap, and it reads again.
    study.enqueue_trial({"x": 3.0})
    numbers = [t.number for t in storage.get_all_trials(study._study_id)]
    assert numbers == [0, 1, 2]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_suggestion_and_a_trials_end_take_two_commits_each(tmp_path):
    from sqlalchemy import event

    from search.config import ExperimentConfig
    from search.study import SoleWriterStorage, StudySearch

    backend = _backend("sqlite", tmp_path / "s")
    space = ExperimentConfig().search_space()
    searcher = StudySearch(
        space=space.define_by_run,
        metric="target_score",
        mode="max",
        sampler=IncrementalTPESampler(seed=1, n_startup_trials=3, multivariate=True, group=True),
        study_name="batched",
        storage=SoleWriterStorage(backend),
    )
    commits = []
    # Every session commits, reads included: the first suggestion also reads the study.
    event.listen(backend.engine, "commit", lambda _connection: commits.append(1))
    for i in range(6):
        commits.clear()
        searcher.suggest(f"t{i}")
        if i == 0:
            searcher.on_trial_result("t0", {"target_score": 0.0, "epoch": 1})
            searcher.on_trial_complete("t0", {"target_score": 0.0, "epoch": 1, "plan_complete": 1})
            continue
        # The new trial, then its ~9 parameters (and TPE's, once it models) together.
        assert len(commits) == 2
        commits.clear()
        searcher.on_trial_result(f"t{i}", {"target_score": 0.1 * i, "epoch": 1})
        assert len(commits) == 1  # an epoch's value is written as it comes
        commits.clear()
        searcher.on_trial_complete(
            f"t{i}", {"target_score": 0.1 * i, "epoch": 1, "plan_complete": 1}
        )
        assert len(commits) == 2  # its attributes, then its state and value
    stored = optuna.load_study(study_name="batched", storage=_backend("sqlite", tmp_path / "s"))
    assert [t.state for t in stored.trials] == [TrialState.COMPLETE] * 6
    assert all(len(t.params) >= 5 and t.user_attrs["epochs"] == 1 for t in stored.trials)
    assert all(t.intermediate_values == {1: t.value} for t in stored.trials)


@pytest.mark.parametrize(
    ("note", "error"),
    [("kept", RuntimeError), ({1, 2}, TypeError)],  # a set: JSON cannot write it
    ids=["the block fails", "the database refuses the batch"],
)
def test_held_writes_reach_the_study_when_something_fails(note, error, tmp_path):
    from search.study import SoleWriterStorage

    storage = SoleWriterStorage(_backend("sqlite", tmp_path / "s"))
    study = optuna.create_study(study_name="held", storage=storage)
    with pytest.raises(error), storage.batched():
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        trial.suggest_int("y", 1, 8)
        trial.set_user_attr("note", note)
        if error is RuntimeError:
            raise RuntimeError("the sampler failed")
    fresh = optuna.load_study(study_name="held", storage=_backend("sqlite", tmp_path / "s"))
    # Written up to what failed (one at a time where the batch was refused), and the
    # copy holds what the study holds.
    assert fresh.trials[0].params.keys() == {"x", "y"}
    assert fresh.trials[0].user_attrs == ({"note": "kept"} if note == "kept" else {})
    assert storage.get_trial(trial._trial_id).params == fresh.trials[0].params
    assert storage.get_trial(trial._trial_id).user_attrs == fresh.trials[0].user_attrs


def test_a_held_parameter_of_another_kind_is_refused_at_once(tmp_path):
    from search.study import SoleWriterStorage

    storage = SoleWriterStorage(_backend("sqlite", tmp_path / "s"))
    study = optuna.create_study(study_name="kinds", storage=storage)
    study.ask().suggest_float("x", 0.0, 1.0)
    with storage.batched():
        trial = study.ask()
        with pytest.raises(ValueError, match="distribution kind"):
            trial.suggest_categorical("x", ["a", "b"])
        trial.suggest_float("x", 0.0, 2.0)  # another range of the same kind is fine
    fresh = optuna.load_study(study_name="kinds", storage=_backend("sqlite", tmp_path / "s"))
    assert [t.params for t in fresh.trials][1].keys() == {"x"}


def _drawn(
    tmp_path, startup_trials: int, sampler: str = "tpe", multivariate: bool = True
) -> list[dict]:
    """Six configs from the search's own searcher, without baselines, each told a
    score that favours low learning rates."""
    from search.config import ExperimentConfig
    from search.searcher import build_searcher

    base = ExperimentConfig()
    search = base.search.model_copy(
        update={
            "sampler": sampler,
            "startup_trials": startup_trials,
            "multivariate": multivariate,
            "evaluate_baselines": False,
            "seed": 5,
        }
    )
    config = base.model_copy(update={"search": search})
    tmp_path.mkdir()
    searcher = build_searcher(config, config.search_space(), f"sqlite:///{tmp_path}/study.db")
    drawn = []
    for i in range(6):
        suggested = searcher.suggest(f"t{i}")
        drawn.append(suggested)
        params = suggested[suggested["strategy"]]
        lr = params.get("base_lr", params.get("lr"))
        searcher.on_trial_complete(f"t{i}", {"target_score": -lr, "plan_complete": 1})
    return drawn


def test_tpe_models_after_its_startup_trials(tmp_path):
    random = _drawn(tmp_path / "random", 10, sampler="random")
    # Until its startup trials have finished, TPE draws what the random sampler draws.
    assert _drawn(tmp_path / "late", 10) == random
    early = _drawn(tmp_path / "early", 4)
    assert early[:4] == random[:4]
    assert early[4:] != random[4:]


def test_tpe_models_each_parameter_on_its_own_when_not_multivariate(tmp_path):
    from search.config import ExperimentConfig
    from search.searcher import build_searcher

    joint = _drawn(tmp_path / "joint", 4)
    alone = _drawn(tmp_path / "alone", 4, multivariate=False)
    # The same random startup, then another model: one density per parameter.
    assert alone[:4] == joint[:4]
    assert alone[4:] != joint[4:]
    config = ExperimentConfig.model_validate({"search": {"multivariate": False}})
    sampler = build_searcher(
        config, config.search_space(), f"sqlite:///{tmp_path}/study.db"
    )._sampler
    assert not sampler._multivariate
    assert sampler._group_decomposed_search_space is None


def test_only_local_disks_count_as_local(tmp_path):
    from search.study import on_local_disk

    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/vda / ext4 rw 0 0\n"
        "server:/export /mnt/shared nfs4 rw 0 0\n"
        "/dev/vdb /mnt/shared/scratch xfs rw 0 0\n"
        "//host/share /mnt/my\\040share cifs rw 0 0\n"
    )
    assert on_local_disk("/home/user/results", mounts)
    assert not on_local_disk("/mnt/shared/results", mounts)
    assert on_local_disk("/mnt/shared/scratch/results", mounts)  # the longest mount wins
    assert not on_local_disk("/mnt/my share/results", mounts)
    assert not on_local_disk("/anything", tmp_path / "no-such-file")  # cannot tell: not local


def test_a_local_sqlite_study_logs_ahead_and_ends_in_one_file(tmp_path, monkeypatch):
    import sqlite3

    from search.study import LocalSQLiteStorage, SoleWriterStorage, checkpoint_study, rdb_storage

    monkeypatch.setattr("search.study._sqlite.on_local_disk", lambda path: True)
    backend = rdb_storage(f"sqlite:///{tmp_path}/local.db")
    assert isinstance(backend, LocalSQLiteStorage)
    storage = SoleWriterStorage(backend)
    configs = _drive(storage, trials=6)
    with backend.engine.connect() as connection:
        modes = [
            connection.exec_driver_sql(f"PRAGMA {p}").scalar()
            for p in ("journal_mode", "synchronous")
        ]
    assert modes == ["wal", 1]  # 1: NORMAL
    log = tmp_path / "local.db-wal"
    assert log.stat().st_size > 0  # the connection is still open: the log holds the trials
    checkpoint_study(f"sqlite:///{tmp_path}/local.db")
    # The database file alone holds the study: the log was moved into it.
    assert not log.exists() or log.stat().st_size == 0
    copy = tmp_path / "copy.db"
    copy.write_bytes((tmp_path / "local.db").read_bytes())
    rows = sqlite3.connect(copy).execute("SELECT COUNT(*) FROM trials").fetchone()
    assert rows == (len(configs),)
    # Unpickled (a resumed search), it still logs ahead.
    import pickle

    restored = pickle.loads(pickle.dumps(backend))
    with restored.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1

    monkeypatch.setattr("search.study._sqlite.on_local_disk", lambda path: False)
    assert type(rdb_storage(f"sqlite:///{tmp_path}/shared.db")).__name__ == "RDBStorage"
    checkpoint_study("postgresql://user@nowhere/db")  # not SQLite: nothing to fold back


def test_a_trial_tune_did_not_resume_is_failed_once_the_resumed_search_ends(tmp_path):
    from search.config import ExperimentConfig
    from search.study import (
        NOT_RESUMED,
        TUNE_TRIAL_ID,
        SoleWriterStorage,
        StudySearch,
        fail_trials_not_resumed,
    )

    space = ExperimentConfig().search_space()
    searcher = StudySearch(
        space=space.define_by_run,
        metric="target_score",
        mode="max",
        sampler=optuna.samplers.RandomSampler(seed=0),
        study_name="resumed",
        storage=SoleWriterStorage(_backend("sqlite", tmp_path / "r")),
    )
    for trial_id in ("resumed", "lost", "done"):
        searcher.suggest(trial_id)
    searcher.on_trial_complete("done", {"target_score": 0.5, "epoch": 1, "plan_complete": 1})
    study = optuna.load_study(study_name="resumed", storage=_backend("sqlite", tmp_path / "r"))
    study.ask()  # running, and naming no Tune trial: not this function's to judge
    assert [t.user_attrs.get(TUNE_TRIAL_ID) for t in study.trials] == [
        "resumed",
        "lost",
        "done",
        None,
    ]

    assert fail_trials_not_resumed(study, {"resumed"}) == [1]

    stored = optuna.load_study(study_name="resumed", storage=_backend("sqlite", tmp_path / "r"))
    assert [t.state for t in stored.trials] == [
        TrialState.RUNNING,
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.RUNNING,
    ]
    assert stored.trials[1].user_attrs["fail_reason"] == NOT_RESUMED


def test_the_sole_writer_storage_adds_new_rows_without_reading_the_trial_back(tmp_path):
    from sqlalchemy import event

    from search.study import SoleWriterStorage

    backend = _backend("sqlite", tmp_path / "s")
    storage = SoleWriterStorage(backend)
    study = optuna.create_study(study_name="rows", storage=storage)
    trial = study.ask()
    statements = []
    event.listen(
        backend.engine,
        "before_cursor_execute",
        lambda _conn, _cursor, statement, *_: statements.append(statement.split()[0].upper()),
    )
    trial.report(0.5, 1)
    trial.set_user_attr("note", "a")
    storage.set_trial_system_attr(trial._trial_id, "origin", "test")
    assert statements and "SELECT" not in statements
    # A value written again replaces the row, through the backend's own checked write.
    storage.set_trial_intermediate_value(trial._trial_id, 1, 0.75)
    storage.set_trial_user_attr(trial._trial_id, "note", "b")
    # A row another writer added behind the copy's back is replaced, not duplicated.
    elsewhere = _backend("sqlite", tmp_path / "s")
    elsewhere.set_trial_user_attr(trial._trial_id, "late", 1)
    storage.set_trial_user_attr(trial._trial_id, "late", 2)

    fresh = optuna.load_study(study_name="rows", storage=_backend("sqlite", tmp_path / "s"))
    stored = fresh.trials[0]
    assert stored.intermediate_values == {1: 0.75}
    assert stored.user_attrs == {"note": "b", "late": 2}
    assert stored.system_attrs["origin"] == "test"
    copy = storage.get_trial(trial._trial_id)
    assert (copy.intermediate_values, copy.user_attrs) == (
        stored.intermediate_values,
        stored.user_attrs,
    )
    # A finished trial takes no more values, as the backend says.
    study.tell(trial, 1.0)
    with pytest.raises(RuntimeError):
        storage.set_trial_intermediate_value(trial._trial_id, 2, 0.9)
