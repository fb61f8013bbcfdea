"""``phasetune strategy show``: a strategy in the experiment file's syntax."""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml

from search.config import ExperimentConfig, StrategyConfig
from spaces import WRITTEN_BUILTINS, written_builtin, written_space
from trainables.strategies import BUILTIN_STRATEGIES, PlanContext, build_plan

__all__ = ["StrategyNotShown", "show_strategy"]


class StrategyNotShown(ValueError):
    """A name ``strategy show`` cannot write out; the message says why."""


def show_strategy(name: str, config: ExperimentConfig) -> str:
    """YAML for the ``strategies:`` section of an experiment file, and as a comment the
    plan its first baseline makes.

    A built-in is written out under ``my_<name>`` (a built-in's own name is taken),
    with its default space for ``config``'s backbone; a strategy of the experiment's
    own is shown as its file writes it.

    Raises:
        StrategyNotShown: a built-in the syntax cannot say, or an unknown name.
    """
    if name in config.strategies and config.strategies[name].is_own:
        key, section = name, config.strategies[name]
        header = f"# {name}, as the experiment {config.name!r} writes it."
    elif name in WRITTEN_BUILTINS:
        key = f"my_{name}"
        section = StrategyConfig.model_validate(written_builtin(name, config.model.num_groups))
        header = (
            f"# The built-in {name} in the experiment file's syntax, for a backbone of"
            f" {config.model.num_groups} layer groups: at every point of this space it makes"
            " the built-in's plan.\n# Paste it under `strategies:` and edit it; it keeps a"
            " name of its own, as the built-in's is taken."
        )
        if name == "progressive":
            header += "\n# The built-in's `preset` (the document's epoch splits) is left out."
    elif name in BUILTIN_STRATEGIES:
        raise StrategyNotShown(
            f"{name}: is written in Python (trainables/strategies), as its warmup styles and"
            f" task orders are beyond the syntax; the syntax writes out"
            f" {' and '.join(WRITTEN_BUILTINS)}"
        )
    else:
        own = [n for n, s in config.strategies.items() if s.is_own]
        raise StrategyNotShown(
            f"{name}: no such strategy; use one of {', '.join([*BUILTIN_STRATEGIES, *own])}"
            " (give the experiment file that defines your own)"
        )
    definition = section.definition()
    context = dataclasses.replace(config.plan_context(), custom={key: section.builder(key)})
    text = yaml.dump({"strategies": {key: definition}}, Dumper=_Dumper, sort_keys=False, width=100)
    return f"{header}\n{_first_plan(key, section, context)}{text}"


class _Dumper(yaml.SafeDumper):
    """Short mappings and lists of plain values on one line, the rest as blocks: a
    space's domains read as ``{low: 1, high: 5}``, a phase as its fields."""


def _is_plain(value: Any) -> bool:
    return not isinstance(value, (dict, list))


def _is_short(values: list[Any]) -> bool:
    """At most four values, each plain, a list of plain ones, or a condition as small as
    ``when: {schedule: step}``."""
    nested_ok = all(
        _is_plain(v)
        or (isinstance(v, dict) and len(v) == 1 and _is_plain(*v.values()))
        or (isinstance(v, list) and all(map(_is_plain, v)))
        for v in values
    )
    return nested_ok and len(values) <= 4


def _mapping(dumper: yaml.SafeDumper, data: dict[str, Any]) -> yaml.Node:
    flow = _is_short(list(data.values()))
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=flow)


def _sequence(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(_is_plain(value) for value in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(dict, _mapping)
_Dumper.add_representer(list, _sequence)


def _first_plan(key: str, section: StrategyConfig, context: PlanContext) -> str:
    """The plan at the first baseline, one line a phase, as comment lines."""
    space = written_space(key, section.space, section.baselines)
    if not space.baselines:
        return ""
    point = space.baseline_points()[0]
    params = {name.split("/", 1)[1]: value for name, value in point.items() if name != "strategy"}
    plan = build_plan(key, params, context)
    lines = [f"# At its first baseline (search.epoch_scale {context.epoch_scale:g}):"]
    lines += [
        f"#   {p.name}: {p.epochs} ep, train {p.trainable}, lr {p.lr:.3g} {p.lr_schedule.kind}"
        for p in plan.phases
    ]
    return "\n".join(lines) + "\n"
