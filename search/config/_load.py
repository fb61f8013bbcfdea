"""Reading an experiment file (or the packaged quickstart) and a targets file, every
mistake a ConfigError of one line."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from analysis.targets import TARGET_SETS, Target
from search.config._errors import ConfigError, format_validation_error
from search.config._experiment import ExperimentConfig
from search.config._search import TargetConfig

__all__ = ["QUICKSTART", "load_experiment", "load_targets"]


#: The quickstart experiment, the same file as examples/quickstart.yaml. It is package
#: data of ``search`` (pyproject), so it stays beside this package, not in it.
QUICKSTART = Path(__file__).parents[1] / "quickstart.yaml"


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
