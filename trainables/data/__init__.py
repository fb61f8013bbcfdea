"""Image data sets: synthetic ones made on the fly, and real ones read from disk.

Every kind lives once per node as uint8 in a store file under the cache, which every
trial and DDP worker maps read-only; batches are gathered from it, then converted,
normalised and augmented on the trial's device.

- `DataSpec` (``_spec``): what determines a data set; `DataError` for unusable data.
- ``_store``: the store files, their lock and the cache folder.
- ``_split``: `Split` and `ImageDataset` over mapped samples, and the batch iterators.
- ``_signs``: the synthetic sign and source-task renderer (scenes: `trainables.scenes`);
  ``_sign_templates``: its class templates.
- ``_readers``: ``image_folder`` and ``parquet`` data on disk, read by ``_image_folder``
  and ``_parquet``, which share ``_decoding``.
- ``_load``: `load_dataset`, which ties them together.
"""

from __future__ import annotations

from trainables.augment import Augmentation
from trainables.data._load import load_dataset, pin_snapshot, store_path
from trainables.data._readers import (
    IMAGE_SUFFIXES,
    READER_VERSION,
    SourceInfo,
    check_num_classes,
    inspect_source,
    parquet_columns,
    source_fingerprint,
)
from trainables.data._signs import GENERATOR_VERSION
from trainables.data._split import (
    ImageDataset,
    Normalization,
    Samples,
    Split,
    iterate_batches,
    iterate_task_batches,
    shard_for_eval,
)
from trainables.data._store import CACHE_DIR_ENV, cache_dir
from trainables.data_spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    KINDS,
    NORMALIZE_MODES,
    ON_CORRUPT,
    REAL_KINDS,
    RESIZE_MODES,
    SYNTHETIC_KINDS,
    TASKS_BY_KIND,
    DataError,
    DataSpec,
    tasks_for_kind,
)
from trainables.scenes import MAX_OBJECTS

__all__ = [
    "CACHE_DIR_ENV",
    "GENERATOR_VERSION",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_SUFFIXES",
    "KINDS",
    "MAX_OBJECTS",
    "NORMALIZE_MODES",
    "ON_CORRUPT",
    "READER_VERSION",
    "REAL_KINDS",
    "RESIZE_MODES",
    "SYNTHETIC_KINDS",
    "TASKS_BY_KIND",
    "Augmentation",
    "DataError",
    "DataSpec",
    "ImageDataset",
    "Normalization",
    "Samples",
    "SourceInfo",
    "Split",
    "cache_dir",
    "check_num_classes",
    "inspect_source",
    "iterate_batches",
    "iterate_task_batches",
    "load_dataset",
    "parquet_columns",
    "pin_snapshot",
    "shard_for_eval",
    "source_fingerprint",
    "store_path",
    "tasks_for_kind",
]
