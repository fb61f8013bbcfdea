"""The experiment file: one pydantic model, validated whole before Ray starts."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import torch
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from analysis.targets import TARGET_SETS, Target
from spaces import SearchSpace, SpaceError, builtin_space, check_parameters, written_space
from trainables.backbones import BackboneError
from trainables.callables import CALLABLE_PATH
from trainables.data import (
    REAL_KINDS,
    TASKS_BY_KIND,
    DataError,
    DataSpec,
    check_num_classes,
    inspect_source,
    parquet_columns,
)
from trainables.engine import reported_metrics
from trainables.models import backbone_blocks, build_backbone, build_head
from trainables.phases import ModelSpec, PlanError, PretrainSpec
from trainables.storage import is_remote, join_location
from trainables.strategies import (
    BUILTIN_STRATEGIES,
    PLAN_FIELDS,
    RESERVED_NAMES,
    FactoryStrategy,
    PlanContext,
    StrategyBuilder,
    WrittenStrategy,
    build_plan,
)

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "format_validation_error",
    "load_experiment",
    "load_targets",
]


#: The quickstart experiment, the same file as examples/quickstart.yaml.
QUICKSTART = Path(__file__).with_name("quickstart.yaml")


class ConfigError(Exception):
    """A user mistake in an experiment file or on the command line (exit status 2)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: Classes of each built-in data set when the file does not say: the documents' own
#: 36 signs, and the multi-task document's 10 object classes.
DEFAULT_NUM_CLASSES = {"synthetic_signs": 36, "synthetic_scenes": 10}


class DatasetConfig(_Section):
    """The data set: built in and synthetic (made on the fly), or read from disk; cached.

    ``synthetic_signs`` has one task (cls); ``synthetic_scenes`` has three (seg, det,
    cls) for the multi-task strategies. ``image_folder`` reads ``path/<class>/<image>``
    (cls); ``parquet`` reads a table of encoded images and labels (cls), plus seg and det
    where it has the mask and boxes columns. Data on disk are decoded once per node.
    """

    kind: Literal["synthetic_signs", "synthetic_scenes", "image_folder", "parquet"] = (
        "synthetic_signs"
    )
    #: Synthetic kinds only: images made before the split.
    num_samples: int = Field(2400, ge=100, le=2_000_000)
    image_size: int = Field(32, ge=16, le=256)
    #: None (the default for data on disk): as many as the data have.
    num_classes: int | None = Field(36, ge=2, le=1000)
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    #: The folder of class folders (image_folder), or a Parquet file or folder of them.
    path: str | None = None
    image_column: str = "image"
    label_column: str = "label"
    #: Used where the table has this column: per-pixel PNG ids, 0 background, c + 1 class c.
    mask_column: str | None = "mask"
    #: Used where the table has this column: ``[x1, y1, x2, y2, class]`` lists in pixels.
    boxes_column: str | None = "boxes"
    #: An unreadable image: ``error`` stops with its path, ``skip`` leaves it out and warns.
    on_corrupt: Literal["error", "skip"] = "error"
    #: Training batches only: mirror left-right (masks and boxes too) half of the time.
    hflip: bool = False
    #: Training batches only: smallest area of a random resized crop; 1.0 is no crop.
    crop_scale: float = Field(1.0, gt=0.0, le=1.0)
    #: ``data``: standardise each channel with the training split's mean and std;
    #: ``imagenet``: with ImageNet's, as torchvision's pretrained weights expect. None
    #: follows the model: imagenet for torchvision backbones and weight files, else data.
    normalize: Literal["data", "imagenet"] | None = None
    #: Data on disk: ``squash`` resizes the whole image to the square (aspect ratio lost);
    #: ``shorter_side`` scales the shorter side to image_size and crops the centre, as
    #: torchvision's weights were evaluated.
    resize: Literal["squash", "shorter_side"] = "squash"

    @model_validator(mode="before")
    @classmethod
    def _classes_of_kind(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "num_classes" not in raw:
            kind = raw.get("kind", "synthetic_signs")
            if kind in DEFAULT_NUM_CLASSES:
                raw = {**raw, "num_classes": DEFAULT_NUM_CLASSES[kind]}
            elif kind in REAL_KINDS:
                raw = {**raw, "num_classes": None}
        return raw

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: str | None) -> str | None:
        # Trials run in their own working directories, so a relative path would not resolve.
        return str(Path(path).expanduser().resolve()) if path else path

    @model_validator(mode="after")
    def _data_on_disk(self) -> DatasetConfig:
        if self.kind not in REAL_KINDS:
            if self.path is not None:
                raise ValueError(
                    f"dataset.path: {self.kind} data are made on the fly; set dataset.kind to"
                    " image_folder or parquet to read data from a path"
                )
            if self.resize != "squash":
                raise ValueError(
                    f"dataset.resize: {self.kind} data are rendered at image_size; resize is"
                    " for image_folder and parquet data"
                )
            if self.num_classes is None:
                raise ValueError(f"dataset.num_classes: {self.kind} needs a number of classes")
            return self
        if not self.path:
            what = "a folder of class folders" if self.kind == "image_folder" else "a Parquet file"
            raise ValueError(f"dataset.path: {self.kind} data need one; give {what}")
        # Compared with the defaults, not with what the file set, so that a dumped and
        # reloaded config (resume, command-line overrides) validates the same.
        changed = [
            field
            for field in ("image_column", "label_column", "mask_column", "boxes_column")
            if getattr(self, field) != type(self).model_fields[field].default
        ]
        if self.kind == "image_folder" and changed:
            raise ValueError(
                f"dataset.{changed[0]}: only parquet data have columns; image_folder"
                " takes labels from the class folders"
            )
        try:
            info = inspect_source(self.kind, self.path, self.image_column, self.label_column)
            for field in ("mask_column", "boxes_column"):
                column = getattr(self, field)
                # The defaults are used where present; a column named outright must exist.
                if field in changed and column and column not in info.columns:
                    raise DataError(
                        f"dataset.{field}: no column {column!r} in {self.path}; its columns"
                        f" are {', '.join(info.columns)} (null: none)"
                    )
            check_num_classes(self.num_classes, info)
        except DataError as error:
            raise ValueError(str(error)) from None
        return self

    def data_spec(self, seed: int = 0, normalize: str = "data") -> DataSpec:
        """The data set as the trainables take it; Parquet masks and boxes are read where
        the table has their columns. ``normalize`` applies where the file leaves it out."""
        mask_column = boxes_column = None
        if self.kind == "parquet" and self.path:
            columns = parquet_columns(self.path)
            mask_column = self.mask_column if self.mask_column in columns else None
            boxes_column = self.boxes_column if self.boxes_column in columns else None
        return DataSpec(
            kind=self.kind,
            num_samples=self.num_samples,
            image_size=self.image_size,
            num_classes=self.num_classes,
            val_fraction=self.val_fraction,
            seed=seed,
            path=self.path,
            image_column=self.image_column,
            label_column=self.label_column,
            mask_column=mask_column,
            boxes_column=boxes_column,
            on_corrupt=self.on_corrupt,
            hflip=self.hflip,
            crop_scale=self.crop_scale,
            normalize=self.normalize or normalize,
            resize=self.resize,
        )


#: Pretraining images are at most this large: the synthetic source task gains little from
#: more pixels, and its cost grows with their square.
PRETRAIN_MAX_IMAGE_SIZE = 64


class PretrainConfig(_Section):
    """Pretraining of the backbone on the synthetic source task (cached by value)."""

    enabled: bool = True
    #: None: the data set's image size, at most PRETRAIN_MAX_IMAGE_SIZE.
    image_size: int | None = Field(None, ge=16, le=256)
    num_samples: int = Field(8000, ge=100, le=2_000_000)
    num_classes: int = Field(20, ge=2, le=1000)
    epochs: int = Field(5, ge=1, le=500)
    lr: float = Field(1e-3, gt=0.0, le=1.0)


#: Layer groups of a backbone when the file does not say (fewer if it has fewer blocks).
DEFAULT_NUM_GROUPS = 6


class ModelConfig(_Section):
    """The backbone and its heads.

    ``backbone``: ``small_cnn`` (built in), ``torchvision:<name>`` (the optional
    torchvision extra; built with ``weights=None``, never downloaded) or ``factory``
    (``factory: "package.module:function"``; ``backbone`` may then be left out).
    Other backbones than small_cnn are split into ``num_groups`` layer groups by
    ``trainables.backbones.layer_groups``: default 6, or one per block when the
    network has fewer; ``groups`` names them outright (then ``num_groups`` is their
    count) and ``blocks`` names the container whose children are the blocks.
    ``weights``, a local state-dict file, replaces the synthetic pretraining.
    """

    backbone: str = "small_cnn"
    #: small_cnn only: channels of its first layer group.
    width: int = Field(16, ge=4, le=512)
    num_groups: int = Field(DEFAULT_NUM_GROUPS, ge=2, le=24)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    pretrain: PretrainConfig = PretrainConfig()
    weights: str | None = None
    strict_weights: bool = True
    factory: str | None = None
    factory_args: dict[str, Any] = Field(default_factory=dict)
    blocks: str | None = None
    groups: list[str] | None = Field(None, min_length=2, max_length=24)

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, backbone: str) -> str:
        if backbone in ("small_cnn", "factory") or (
            backbone.startswith("torchvision:") and len(backbone) > len("torchvision:")
        ):
            return backbone
        raise ValueError(
            f"unknown backbone {backbone!r}; use small_cnn, torchvision:<name>"
            " (e.g. torchvision:mobilenet_v2) or factory with model.factory"
        )

    @field_validator("weights")
    @classmethod
    def _local_weights(cls, weights: str | None) -> str | None:
        if weights is None:
            return None
        path = Path(weights).expanduser().resolve()
        if not path.is_file():
            raise ValueError(
                f"no such file {str(path)!r}; give a local state-dict file"
                " (weights are never downloaded)"
            )
        # Trials run in their own working directories: keep the path absolute.
        return str(path)

    @field_validator("factory")
    @classmethod
    def _factory_path(cls, factory: str | None) -> str | None:
        if factory is not None and not CALLABLE_PATH.fullmatch(factory):
            raise ValueError(f"write 'package.module:function', got {factory!r}")
        return factory

    @model_validator(mode="wrap")
    @classmethod
    def _defaults_of_the_network(cls, raw: Any, handler: Any) -> ModelConfig:
        if isinstance(raw, dict):
            if raw.get("factory") is not None and "backbone" not in raw:
                raw = {**raw, "backbone": "factory"}
            if isinstance(raw.get("groups"), list) and "num_groups" not in raw:
                raw = {**raw, "num_groups": len(raw["groups"])}
        config = handler(raw)
        if isinstance(raw, dict) and "num_groups" not in raw and config.backbone != "small_cnn":
            blocks = _block_count(config)
            if blocks is not None and blocks >= 2:
                config = config.model_copy(update={"num_groups": min(DEFAULT_NUM_GROUPS, blocks)})
        return config

    def spec(self, pretrained: PretrainSpec | None = None) -> ModelSpec:
        """The model as the trainables take it."""
        return ModelSpec(
            backbone=self.backbone,
            width=self.width,
            num_groups=self.num_groups,
            dropout=self.dropout,
            pretrained=pretrained if self.weights is None else None,
            weights=self.weights,
            strict_weights=self.strict_weights,
            factory=self.factory,
            factory_args=dict(self.factory_args),
            blocks=self.blocks,
            groups=tuple(self.groups) if self.groups is not None else None,
        )

    def check(self, tasks: tuple[str, ...], num_classes: int) -> None:
        """Build the backbone (weights file included) and the heads of ``tasks`` once.

        Raises:
            ValueError: one line naming the model field at fault.
        """
        if self.factory is not None and self.backbone != "factory":
            raise ValueError(
                f"model.backbone: is {self.backbone!r} but model.factory is set;"
                " leave backbone out (or set it to factory)"
            )
        if self.backbone == "factory" and self.factory is None:
            raise ValueError("model.factory: backbone factory needs 'package.module:function'")
        if self.backbone == "small_cnn":
            for field in ("blocks", "groups"):
                if getattr(self, field) is not None:
                    raise ValueError(
                        f"model.{field}: small_cnn has its own layer groups; {field} is for"
                        " torchvision and factory backbones"
                    )
            if self.weights is None:
                return
        # Forked: validating a file must not move the random numbers a run draws.
        with torch.random.fork_rng(devices=[]):
            try:
                backbone = build_backbone(self.spec())
                for task in tasks:
                    build_head(task, backbone, num_classes, self.dropout)
            except BackboneError as error:
                raise ValueError(str(error)) from None


class StrategyConfig(_Section):
    """One strategy to compare.

    A built-in takes ``space``, overrides of its default parameter domains. A strategy
    of your own writes its ``phases`` (or names a ``plan_factory``), its ``space`` and
    ``baselines``, and may set the plan-wide fields (``batch_size``, ``dropout``, ...).
    """

    space: dict[str, Any] = Field(default_factory=dict)
    phases: list[Any] | None = None
    plan_factory: str | None = None
    baselines: list[Any] = Field(default_factory=list)
    batch_size: Any = None
    dropout: Any = None
    weight_decay: Any = None
    label_smoothing: Any = None
    focal_gamma: Any = None

    @property
    def is_own(self) -> bool:
        return self.phases is not None or self.plan_factory is not None

    def definition(self) -> dict[str, Any]:
        """The section as the file writes it (what the best-config file keeps), in the
        order a reader follows: phases, plan-wide fields, space, baselines."""
        written = self.model_dump(exclude_defaults=True)
        order = ("phases", "plan_factory", *PLAN_FIELDS, "space", "baselines")
        return {key: written[key] for key in order if key in written}

    def builder(self, name: str) -> StrategyBuilder:
        """The strategy of your own this section defines; PlanError naming the field."""
        if self.phases is not None and self.plan_factory is not None:
            raise PlanError("plan_factory: give either phases or a plan_factory, not both")
        if self.plan_factory is not None:
            if not CALLABLE_PATH.fullmatch(self.plan_factory):
                raise PlanError(
                    f"plan_factory: write 'package.module:function', got {self.plan_factory!r}"
                )
            written = [key for key in PLAN_FIELDS if getattr(self, key) is not None]
            if written:
                raise PlanError(
                    f"{written[0]}: a plan_factory sets the plan itself; read the value from"
                    " params in the factory instead"
                )
            factory = FactoryStrategy(name, self.plan_factory)
            factory.check_importable()
            return factory
        definition = {k: v for k, v in self.definition().items() if v is not None}
        return WrittenStrategy.parse(name, definition)


class SearchConfig(_Section):
    num_samples: int = Field(12, ge=1, le=100_000)
    sampler: Literal["tpe", "random"] = "tpe"
    #: TPE: finished trials (baselines included) before it models; the ones before are
    #: drawn at random. Optuna's default 10: with 4 of the quickstart's 12, TPE
    #: learned from single-phase trials ASHA had cut short and never found the
    #: recipe 10 finds (docs/benchmarks.md).
    startup_trials: int = Field(10, ge=1)
    #: strategy_asha: plain ASHA judged short progressive plans and long single-phase
    #: ones at the same epochs, stopped every single-phase trial at epoch 2 in 2 of 8
    #: seeds of the 50-trial benchmark, and the search never found the recipes random
    #: search found (docs/benchmarks.md).
    scheduler: Literal["asha", "strategy_asha", "phase_asha", "median", "fifo"] = "strategy_asha"
    max_concurrent_trials: int | None = Field(None, ge=1)
    seed: int = Field(0, ge=0)
    epoch_scale: float = Field(1.0, gt=0.0, le=100.0)
    grace_period: int = Field(2, ge=1)
    #: phase_asha: first decision at this share of each trial's planned epochs.
    grace_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    reduction_factor: float = Field(3.0, gt=1.0)
    evaluate_baselines: bool = True
    #: What Optuna optimises: the scalar ``target_score``, or ``pareto``: every
    #: target's metric as its own objective (a multi-objective study whose Pareto
    #: front shows the trade-offs between tasks). Schedulers and ranking still use
    #: ``target_score``.
    objective: Literal["target_score", "pareto"] = "target_score"


class ResourcesConfig(_Section):
    workers_per_trial: int = Field(1, ge=1, le=1024)
    cpus_per_worker: float = Field(1.0, gt=0.0)
    gpus_per_worker: float = Field(0.0, ge=0.0)
    max_failures: int = Field(0, ge=0, le=100)
    #: bf16 autocast of forward passes; "auto": on GPUs that support bf16, else fp32.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    #: Channels-last weights and batches; None: on GPUs only.
    channels_last: bool | None = None
    #: The whole data set in GPU memory; None: when it fits in a quarter of what is free.
    data_on_device: bool | None = None


class TargetConfig(_Section):
    metric: str
    threshold: float
    direction: Literal["max", "min"] = "max"
    source: str = "set in the experiment file"
    assumed: bool = False


class StorageConfig(_Section):
    #: Where experiments go: a local path, or a URI pyarrow's filesystems accept
    #: (``s3://bucket/prefix``, ``gs://...``; ``file://`` is a local, e.g. shared, mount).
    path: str = "phasetune_results"
    #: Where the Optuna study lives: an RDB URL (``sqlite:///...``, ``postgresql://...``,
    #: ``mysql://...``), or a path to a journal file (no ``://``; for file systems
    #: without reliable SQLite locking, e.g. NFS). None keeps a SQLite study beside
    #: the experiment.
    study: str | None = None

    def experiment_location(self, name: str) -> str:
        """Where experiment ``name`` goes: an absolute local path, or a URI."""
        return join_location(self.path, name)

    @field_validator("path")
    @classmethod
    def _writable_folder(cls, path: str) -> str:
        if is_remote(path):
            return path
        local = Path(path.removeprefix("file://")).expanduser().resolve()
        # The experiment folder is made when the search starts: what exists of it must be
        # a folder this user can write in.
        existing = next(folder for folder in (local, *local.parents) if folder.exists())
        if not existing.is_dir():
            raise ValueError(
                f"{existing} is a file, not a folder; give a folder for the experiments"
                " (it is created if missing)"
            )
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"cannot write in {existing}; give a folder you can write to")
        return path

    @model_validator(mode="after")
    def _journal_folder_exists(self) -> StorageConfig:
        if is_remote(self.path) and self.study is None:
            # SQLite needs a local file with working locks; an object store has neither.
            raise ValueError(
                f"storage.study: is required when storage.path is a remote URI ({self.path});"
                " give an Optuna RDB URL such as postgresql://user:password@host/db"
            )
        if self.study and "://" not in self.study:
            folder = Path(self.study).expanduser().resolve().parent
            if not folder.is_dir():
                raise ValueError(
                    f"storage.study: the journal file's folder {folder} does not exist;"
                    " create it or give an RDB URL such as sqlite:///study.db"
                )
        return self


#: The quickstart's comparison: the documents' own schedules and one lr for the
#: whole network, so a dozen trials go to epochs, depth and learning rates.
DEFAULT_STRATEGIES = {
    "progressive": StrategyConfig(space={"lr_schedule": "constant", "head_lr_cls": 1.0}),
    "single_phase": StrategyConfig(space={"lr_schedule": "plateau", "head_lr_cls": 1.0}),
}


class ExperimentConfig(_Section):
    """An experiment file. Every field has a default, so a file names only what it
    changes; epochs default to the documents' own (``search.epoch_scale`` 1.0)."""

    name: str = Field("quickstart", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    dataset: DatasetConfig = DatasetConfig()
    model: ModelConfig = ModelConfig()
    strategies: dict[str, StrategyConfig] = Field(default_factory=lambda: dict(DEFAULT_STRATEGIES))
    search: SearchConfig = SearchConfig()
    resources: ResourcesConfig = ResourcesConfig()
    targets: str | list[TargetConfig] = "nsl"
    storage: StorageConfig = StorageConfig()

    @model_validator(mode="after")
    def _check_across_sections(self) -> ExperimentConfig:
        self._check_model()
        self._check_strategy_names()
        try:
            for name, written in self.own_strategies().items():
                if isinstance(written, WrittenStrategy):
                    # Phases and space first: a baseline of a mistyped space misleads.
                    space = written_space(name, self.strategies[name].space, [])
                    check_parameters(space, written.references(), written.step_variables())
            self.search_space()
        except SpaceError as error:
            raise ValueError(str(error)) from None
        if isinstance(self.targets, str) and self.targets not in TARGET_SETS:
            raise ValueError(
                f"targets: unknown target set {self.targets!r}; use one of"
                f" {', '.join(TARGET_SETS)} or a list of {{metric, threshold, direction}}"
            )
        try:
            data = self.data_spec()
        except ValueError as error:
            raise ValueError(f"dataset: {error}") from None
        context = self.plan_context()
        for strategy in self.search_space().strategies:
            self._check_plans(strategy, context)
        known = reported_metrics(data.tasks)
        for i, target in enumerate(self.target_list()):
            if target.metric not in known:
                raise ValueError(
                    f"targets[{i}].metric: no strategy reports {target.metric!r};"
                    f" use one of {', '.join(known)}"
                )
        return self

    def _check_model(self) -> None:
        """The backbone builds, splits into ``num_groups`` and carries every task's head."""
        try:
            data = self.data_spec()
        except ValueError:
            return  # reported below, as a dataset error
        self.model.check(tuple(data.tasks), data.num_classes or 2)

    def _check_strategy_names(self) -> None:
        if not self.strategies:
            raise ValueError("strategies: name at least one strategy to search")
        for name, strategy in self.strategies.items():
            where = f"strategies.{name}"
            if name in BUILTIN_STRATEGIES:
                if strategy.is_own:
                    raise ValueError(
                        f"{where}: {name} is a built-in strategy; give your own another name,"
                        " or drop phases/plan_factory to search the built-in"
                    )
                extra = [k for k in ("baselines", *PLAN_FIELDS) if getattr(strategy, k)]
                if extra:
                    raise ValueError(
                        f"{where}.{extra[0]}: a built-in takes only space (its parameters'"
                        " domains); write a strategy of your own to set it"
                    )
            elif not strategy.is_own:
                raise ValueError(
                    f"{where}: unknown strategy; use one of {', '.join(BUILTIN_STRATEGIES)},"
                    " or write your own with phases (or plan_factory)"
                )
            elif name in RESERVED_NAMES or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
                raise ValueError(
                    f"{where}: name your strategy with letters, digits and _ (starting with a"
                    " letter), other than 'strategy'"
                )

    def own_strategies(self) -> dict[str, StrategyBuilder]:
        """The strategies this file defines itself, by name."""
        own = {}
        for name, strategy in self.strategies.items():
            if strategy.is_own:
                try:
                    own[name] = strategy.builder(name)
                except PlanError as error:
                    raise ValueError(f"strategies.{name}.{error}") from None
        return own

    @staticmethod
    def _check_plans(strategy: Any, context: PlanContext) -> None:
        """Every baseline, and the space's corners, must make a plan that can run."""
        name = strategy.strategy
        for point in strategy.baseline_points():
            params = {k.split("/", 1)[1]: v for k, v in point.items() if k != "strategy"}
            try:
                build_plan(name, params, context)
            except PlanError as error:
                raise ValueError(
                    _data_kind_mismatch(name, params, context) or f"strategies.{name}: {error}"
                ) from None
        for params in strategy.corner_points():
            try:
                build_plan(name, params, context)
            except PlanError as error:
                point = ", ".join(f"{key}={value!r}" for key, value in params.items())
                where = "" if "(at " in str(error) else f" (at {point})"
                raise ValueError(
                    _data_kind_mismatch(name, params, context)
                    or f"strategies.{name}.space: a value it allows makes a plan that cannot"
                    f" run: {error}{where}; narrow the range or choices"
                ) from None

    # -- what the layers below take ---------------------------------------

    def target_list(self) -> tuple[Target, ...]:
        if isinstance(self.targets, str):
            return TARGET_SETS[self.targets].targets
        return tuple(Target(**target.model_dump()) for target in self.targets)

    def search_space(self) -> SearchSpace:
        return SearchSpace(
            tuple(
                written_space(name, strategy.space, strategy.baselines)
                if strategy.is_own
                else builtin_space(name, strategy.space, self.model.num_groups)
                for name, strategy in self.strategies.items()
            )
        )

    def model_spec(self) -> ModelSpec:
        pretrain = self.model.pretrain
        return self.model.spec(
            pretrained=PretrainSpec(
                data=DataSpec(
                    kind="synthetic_source",
                    num_samples=pretrain.num_samples,
                    image_size=pretrain.image_size
                    or min(self.dataset.image_size, PRETRAIN_MAX_IMAGE_SIZE),
                    num_classes=pretrain.num_classes,
                ),
                epochs=pretrain.epochs,
                lr=pretrain.lr,
            )
            if pretrain.enabled
            else None,
        )

    def data_spec(self) -> DataSpec:
        # Pretrained weights from outside (torchvision's, a weights file) expect ImageNet's
        # statistics; a backbone pretrained here saw its own data's.
        pretrained_elsewhere = self.model.backbone.startswith("torchvision:") or bool(
            self.model.weights
        )
        normalize = "imagenet" if pretrained_elsewhere else "data"
        return self.dataset.data_spec(seed=self.search.seed, normalize=normalize)

    def plan_context(self) -> PlanContext:
        return PlanContext(
            model=self.model_spec(),
            data=self.data_spec(),
            seed=self.search.seed,
            epoch_scale=self.search.epoch_scale,
            custom=self.own_strategies(),
        )

    def experiment_dir(self) -> Path:
        return Path(self.storage.path).expanduser().resolve() / self.name


def _block_count(model: ModelConfig) -> int | None:
    """Blocks ``model``'s network splits into, or None where it does not build (the
    model check reports why)."""
    try:
        with torch.random.fork_rng(devices=[]):
            return backbone_blocks(model.spec())
    except Exception:
        return None


def _data_kind_mismatch(strategy: str, params: dict[str, Any], context: PlanContext) -> str | None:
    """The message for a strategy whose tasks the data set lacks, or None if that is
    not why its plan failed."""
    fits = []
    for kind in TASKS_BY_KIND:
        if kind == context.data.kind or kind not in DEFAULT_NUM_CLASSES:
            continue
        probe = DataSpec(kind=kind, num_samples=100, image_size=16, num_classes=2)
        try:
            build_plan(strategy, params, dataclasses.replace(context, data=probe))
        except PlanError:
            continue
        fits.append(kind)
    if not fits:
        return None
    have = ", ".join(context.data.tasks)
    if context.data.kind == "parquet":
        return (
            f"strategies.{strategy}: needs tasks that the parquet data set lacks (it has only"
            f" {have}); add mask and boxes columns (dataset.mask_column, dataset.boxes_column)"
        )
    return (
        f"strategies.{strategy}: needs tasks that dataset.kind {context.data.kind} lacks"
        f" (it has only {have}); set dataset.kind to {' or '.join(fits)}"
    )


def format_validation_error(error: ValidationError, source: str) -> str:
    """One line naming the field, what is wrong and, for unknown keys, what is allowed."""
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        allowed = _allowed_keys(first["loc"][:-1])
        message = f"unknown key; allowed here: {', '.join(allowed)}"
    elif first["type"] == "value_error":
        message = str(first.get("ctx", {}).get("error", first["msg"]))
    else:
        message = f"{first['msg']} (got {first.get('input')!r})"
    more = len(error.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{source}: {location + ': ' if location else ''}{message}{suffix}"


def _allowed_keys(location: tuple[Any, ...]) -> list[str]:
    """Field names of the section at ``location`` (dict entries are stepped over)."""
    model: type[BaseModel] = ExperimentConfig
    parts = list(location)
    while parts:
        field = model.model_fields.get(parts.pop(0))
        if field is None:
            break
        annotation = field.annotation
        if get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
            if parts:
                parts.pop(0)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return list(model.model_fields)


def load_experiment(path: str | os.PathLike[str] | None) -> ExperimentConfig:
    """Read and validate an experiment file (None: the packaged quickstart).

    Raises:
        ConfigError: with one line that names the file, the field and the fix.
    """
    if path is None:
        path = QUICKSTART
    source = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such file; give the path of an experiment YAML") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as error:
        raise ConfigError(f"{source}: cannot read the experiment file ({error})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{source}: {where}malformed YAML ({problem})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: the file must be a mapping of sections, got {type(raw).__name__}"
        )
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None


def load_targets(value: str) -> tuple[Target, ...]:
    """Targets from a set name (``nsl``) or a YAML file listing
    ``{metric, threshold, direction, source}``.

    Raises:
        ConfigError: an unknown set, an unreadable file or a malformed target.
    """
    if value in TARGET_SETS:
        return TARGET_SETS[value].targets
    path = Path(value)
    if not path.is_file():
        raise ConfigError(
            f"--targets: {value!r} is neither a target set ({', '.join(TARGET_SETS)})"
            " nor a YAML file"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{value}: malformed YAML ({error})") from None
    if isinstance(raw, dict) and "targets" in raw:
        raw = raw["targets"]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{value}: give a list of {{metric, threshold, direction, source}}")
    targets = []
    for i, item in enumerate(raw):
        try:
            targets.append(Target(**TargetConfig.model_validate(item).model_dump()))
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"{value}: targets[{i}].{where}: {first['msg']}") from None
    return tuple(targets)
