"""The private parts of Optuna the study storage uses, in one place.

Written against Optuna 5.0 (``optuna==5.0.0`` in constraints.txt); an upgrade checks
these names first. ``SoleWriterStorage`` writes several rows in one SQLAlchemy session
through the RDB storage's own models and session factory, which Optuna keeps private.
"""

from __future__ import annotations

from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session as scoped_session
from optuna.study._frozen import FrozenStudy

__all__ = ["FrozenStudy", "models", "scoped_session"]
