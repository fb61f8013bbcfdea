"""The private parts of Ray Tune that the crash recovery reads and rewrites, in one place.

Written against Ray 2.60 (``ray==2.60.0`` in constraints.txt; ``pyproject.toml`` pins
the minor version). Tune's experiment snapshot holds, per trial, its state pickled
into JSON and its run metadata with the checkpoint manager; ``search/recovery.py``
repairs a trial whose snapshot names a checkpoint that is gone, which needs these
types as Tune writes them. An upgrade checks these names first
(``tests/test_faults.py`` and ``tests/search/test_resume.py`` exercise them).
"""

from __future__ import annotations

from ray.train._internal.session import _TrainingResult as TrainingResult
from ray.tune.trainable.metadata import _TrainingRunMetadata as TrainingRunMetadata
from ray.tune.utils.serialization import TuneFunctionEncoder
from ray.tune.utils.serialization import _loads_with_cloudpickle as loads_with_cloudpickle

__all__ = [
    "TrainingResult",
    "TrainingRunMetadata",
    "TuneFunctionEncoder",
    "loads_with_cloudpickle",
]
