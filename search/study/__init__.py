"""The search's Optuna study: a searcher that tells the study what really happened
(``_searcher``), a storage for the one process that writes it (``_sole_writer``), and
where it lives (``_sqlite``)."""

from search.study._searcher import (
    NOT_RESUMED,
    TUNE_TRIAL_ID,
    StudySearch,
    fail_trials_not_resumed,
    trial_state,
)
from search.study._sole_writer import SoleWriterStorage
from search.study._sqlite import (
    LocalSQLiteStorage,
    checkpoint_study,
    local_sqlite_file,
    on_local_disk,
    rdb_storage,
)

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
