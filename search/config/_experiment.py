"""The whole experiment file, and the checks that span its sections (the model against
the data, strategies' plans against the model and data, targets against the metrics)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from analysis.targets import TARGET_SETS, Target
from search.config._dataset import DEFAULT_NUM_CLASSES, DatasetConfig
from search.config._model import PRETRAIN_MAX_IMAGE_SIZE, ModelConfig
from search.config._search import ResourcesConfig, SearchConfig, StorageConfig, TargetConfig
from search.config._section import _Section
from search.config._strategies import DEFAULT_STRATEGIES, StrategyConfig
from spaces import (
    SearchSpace,
    SpaceError,
    StrategySpace,
    builtin_space,
    check_parameters,
    written_space,
)
from trainables.data import TASKS_BY_KIND, DataSpec
from trainables.metric_names import reported_metrics
from trainables.phases import ModelSpec, PlanError, PretrainSpec
from trainables.strategies import (
    BUILTIN_STRATEGIES,
    PLAN_FIELDS,
    RESERVED_NAMES,
    PlanContext,
    StrategyBuilder,
    WrittenStrategy,
    build_plan,
)

__all__ = ["ExperimentConfig"]


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

    def strategy_spaces(self) -> dict[str, StrategySpace]:
        """The experiment's strategy spaces (overrides applied) by strategy name."""
        return {space.strategy: space for space in self.search_space().strategies}

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
