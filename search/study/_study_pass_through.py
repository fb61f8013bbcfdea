"""The study-level calls of a storage that wraps another: straight to the backend.

Studies are created, named and annotated rarely (once per search, and by
``phasetune status``), so a wrapper that keeps trials in memory gains nothing by
holding them; only its trial calls need their own handling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from optuna.storages import BaseStorage
from optuna.study import StudyDirection

from search.study._optuna_internals import FrozenStudy

__all__ = ["StudyPassThrough"]


class StudyPassThrough(BaseStorage):
    """Study-level calls passed to ``self._backend``, which the subclass sets."""

    _backend: BaseStorage

    def create_new_study(
        self, directions: Sequence[StudyDirection], study_name: str | None = None
    ) -> int:
        return self._backend.create_new_study(directions, study_name)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._backend.set_study_user_attr(study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._backend.set_study_system_attr(study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._backend.get_study_id_from_name(study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._backend.get_study_name_from_id(study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._backend.get_study_user_attrs(study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._backend.get_study_system_attrs(study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._backend.get_all_studies()
