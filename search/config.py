"""The experiment file: one pydantic model, validated whole before Ray starts."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from analysis.targets import TARGET_SETS, Target
from spaces import SearchSpace, SpaceError, build_search_space
from trainables.data import TASKS_BY_KIND, DataSpec
from trainables.engine import reported_metrics
from trainables.phases import ModelSpec, PlanError, PretrainSpec
from trainables.strategies import PlanContext, build_plan

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
    """The built-in synthetic data set (made on the fly, cached).

    ``synthetic_signs`` has one task (cls); ``synthetic_scenes`` has three (seg, det,
    cls) for the multi-task strategies.
    """

    kind: Literal["synthetic_signs", "synthetic_scenes"] = "synthetic_signs"
    num_samples: int = Field(2400, ge=100, le=2_000_000)
    image_size: int = Field(32, ge=16, le=256)
    num_classes: int = Field(36, ge=2, le=1000)
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)

    @model_validator(mode="before")
    @classmethod
    def _classes_of_kind(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "num_classes" not in raw:
            kind = raw.get("kind", "synthetic_signs")
            if kind in DEFAULT_NUM_CLASSES:
                raw = {**raw, "num_classes": DEFAULT_NUM_CLASSES[kind]}
        return raw


class PretrainConfig(_Section):
    """Pretraining of the backbone on the synthetic source task (cached by value)."""

    enabled: bool = True
    num_samples: int = Field(8000, ge=100, le=2_000_000)
    num_classes: int = Field(20, ge=2, le=1000)
    epochs: int = Field(5, ge=1, le=500)
    lr: float = Field(1e-3, gt=0.0, le=1.0)


class ModelConfig(_Section):
    backbone: Literal["small_cnn"] = "small_cnn"
    width: int = Field(16, ge=4, le=512)
    num_groups: int = Field(6, ge=2, le=24)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    pretrain: PretrainConfig = PretrainConfig()


class StrategyConfig(_Section):
    """One strategy to compare; ``space`` overrides its default parameter domains."""

    space: dict[str, Any] = Field(default_factory=dict)


class SearchConfig(_Section):
    num_samples: int = Field(12, ge=1, le=100_000)
    sampler: Literal["tpe", "random"] = "tpe"
    scheduler: Literal["asha", "phase_asha", "median", "fifo"] = "asha"
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


class TargetConfig(_Section):
    metric: str
    threshold: float
    direction: Literal["max", "min"] = "max"
    source: str = "set in the experiment file"
    assumed: bool = False


class StorageConfig(_Section):
    path: str = "phasetune_results"
    #: Where the Optuna study lives: an RDB URL (``sqlite:///...``, ``postgresql://...``,
    #: ``mysql://...``), or a path to a journal file (no ``://``; for file systems
    #: without reliable SQLite locking, e.g. NFS). None keeps a SQLite study beside
    #: the experiment.
    study: str | None = None

    @model_validator(mode="after")
    def _journal_folder_exists(self) -> StorageConfig:
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
        try:
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
        known = reported_metrics(TASKS_BY_KIND[data.kind])
        for i, target in enumerate(self.target_list()):
            if target.metric not in known:
                raise ValueError(
                    f"targets[{i}].metric: no strategy reports {target.metric!r};"
                    f" use one of {', '.join(known)}"
                )
        return self

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
                raise ValueError(
                    _data_kind_mismatch(name, params, context)
                    or f"strategies.{name}.space: a value it allows makes a plan that cannot"
                    f" run: {error}; narrow the range or choices"
                ) from None

    # -- what the layers below take ---------------------------------------

    def target_list(self) -> tuple[Target, ...]:
        if isinstance(self.targets, str):
            return TARGET_SETS[self.targets].targets
        return tuple(Target(**target.model_dump()) for target in self.targets)

    def search_space(self) -> SearchSpace:
        overrides = {name: dict(strategy.space) for name, strategy in self.strategies.items()}
        return build_search_space(overrides, self.model.num_groups)

    def model_spec(self) -> ModelSpec:
        pretrain = self.model.pretrain
        return ModelSpec(
            backbone=self.model.backbone,
            width=self.model.width,
            num_groups=self.model.num_groups,
            dropout=self.model.dropout,
            pretrained=PretrainSpec(
                data=DataSpec(
                    kind="synthetic_source",
                    num_samples=pretrain.num_samples,
                    image_size=self.dataset.image_size,
                    num_classes=pretrain.num_classes,
                ),
                epochs=pretrain.epochs,
                lr=pretrain.lr,
            )
            if pretrain.enabled
            else None,
        )

    def data_spec(self) -> DataSpec:
        return DataSpec(
            kind=self.dataset.kind,
            num_samples=self.dataset.num_samples,
            image_size=self.dataset.image_size,
            num_classes=self.dataset.num_classes,
            val_fraction=self.dataset.val_fraction,
            seed=self.search.seed,
        )

    def plan_context(self) -> PlanContext:
        return PlanContext(
            model=self.model_spec(),
            data=self.data_spec(),
            seed=self.search.seed,
            epoch_scale=self.search.epoch_scale,
        )

    def experiment_dir(self) -> Path:
        return Path(self.storage.path).expanduser().resolve() / self.name


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
    have = ", ".join(TASKS_BY_KIND[context.data.kind])
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
