"""The space and baselines of a strategy written in the experiment file, and the
built-ins written the same way (``phasetune strategy show``).

A written space takes ``{low, high, log, step}``, ``{choices: [...]}``, a fixed scalar
(or ``{value: ...}``) or the ``[low, high]`` shorthand, each optionally
``when: {param: value}`` (active only when an earlier parameter takes that value, or
one of a list of values).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from spaces.params import (
    Categorical,
    Fixed,
    FloatRange,
    IntRange,
    Param,
    SpaceError,
    When,
    parse_override,
)
from spaces.progressive import progressive_space
from spaces.single_phase import single_phase_space
from spaces.strategy_space import Baseline, StrategySpace

__all__ = [
    "WRITTEN_BUILTINS",
    "check_parameters",
    "written_builtin",
    "written_space",
]

_DOMAIN_KEYS = ("low", "high", "log", "step", "choices", "value", "when")


def written_space(
    strategy: str, raw_space: Mapping[str, Any], raw_baselines: Sequence[Any]
) -> StrategySpace:
    """The space ``strategy``'s section writes, with its baselines checked against it.

    Raises:
        SpaceError: one line naming ``strategies.<name>.space.<param>`` or
            ``strategies.<name>.baselines[i]`` and the fix.
    """
    params: dict[str, Param] = {}
    conditions: dict[str, When] = {}
    for name, raw in raw_space.items():
        path = f"strategies.{strategy}.space.{name}"
        if not str(name).isidentifier():
            raise SpaceError(f"{path}: name a parameter with letters, digits and _")
        params[str(name)], when = _domain(path, raw)
        if when is not None:
            conditions[str(name)] = when
    try:
        space = StrategySpace(strategy, params, conditions=conditions)
    except SpaceError as error:
        raise SpaceError(f"strategies.{strategy}.space.{str(error).split('.', 1)[1]}") from None
    if not isinstance(raw_baselines, Sequence) or isinstance(raw_baselines, str):
        raise SpaceError(f"strategies.{strategy}.baselines: give a list of parameter mappings")
    baselines = tuple(_baseline(space, i, raw) for i, raw in enumerate(raw_baselines))
    return StrategySpace(strategy, params, baselines=baselines, conditions=conditions)


def _domain(path: str, raw: Any) -> tuple[Param, When | None]:
    when = None
    if isinstance(raw, Mapping):
        unknown = [str(key) for key in raw if key not in _DOMAIN_KEYS]
        if unknown:
            raise SpaceError(
                f"{path}.{unknown[0]}: unknown key; a parameter takes {{low, high, log, step}},"
                " {choices: [...]}, a fixed value ({value: ...}) or [low, high], and optionally"
                " when"
            )
        if "when" in raw:
            when = _when(f"{path}.when", raw["when"])
            raw = {key: value for key, value in raw.items() if key != "when"}
        if not raw:
            raise SpaceError(f"{path}: give {{low, high}}, {{choices: [...]}} or a value")
    elif isinstance(raw, Sequence) and not isinstance(raw, str):
        if len(raw) != 2:
            raise SpaceError(
                f"{path}: [low, high] takes two numbers, got {list(raw)}; write choices as"
                " {choices: [...]}"
            )
        raw = {"low": raw[0], "high": raw[1]}
    if not isinstance(raw, Mapping):
        return Fixed(raw), when
    if "value" in raw:
        if len(raw) > 1:
            raise SpaceError(f"{path}: a fixed value takes no range or choices")
        return Fixed(raw["value"]), when
    if "choices" in raw and len(raw) > 1:
        raise SpaceError(f"{path}: give either choices or a range, not both")
    if "choices" in raw and (
        isinstance(raw["choices"], str) or not isinstance(raw["choices"], Sequence)
    ):
        raise SpaceError(f"{path}.choices: give a list, got {raw['choices']!r}")
    # A written space has no default to take its shape from: whole-number bounds make
    # a range of whole numbers, any other number a range of floats.
    return parse_override(path, Fixed(None), raw), when


def _when(path: str, raw: Any) -> When:
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise SpaceError(
            f"{path}: name one earlier parameter and its value(s), e.g. {{schedule: cosine}}"
        )
    ((param, values),) = raw.items()
    if isinstance(values, Sequence) and not isinstance(values, str):
        return When(str(param), *values)
    return When(str(param), values)


def _baseline(space: StrategySpace, index: int, raw: Any) -> Baseline:
    path = f"strategies.{space.strategy}.baselines[{index}]"
    if not isinstance(raw, Mapping):
        raise SpaceError(f"{path}: give a mapping of parameter values, got {raw!r}")
    for name, value in raw.items():
        if name not in space.params:
            raise SpaceError(
                f"{path}.{name}: not a parameter of the space; it has"
                f" {', '.join(space.params) or 'none'}"
            )
        domain = space.params[name]
        if isinstance(domain, Fixed):
            continue  # the fixed value replaces it, as for a built-in's baseline
        if isinstance(domain, IntRange) and (isinstance(value, bool) or not isinstance(value, int)):
            raise SpaceError(f"{path}.{name}: takes a whole number, got {value!r}")
        if not domain.contains(value):
            raise SpaceError(f"{path}.{name}: {value!r} is outside the space ({_shown(domain)})")
    given: dict[str, Any] = {}
    for name, domain in space.params.items():
        if not space.is_active(name, given):
            continue
        if name in raw:
            given[name] = raw[name]
        elif isinstance(domain, Fixed):
            given[name] = domain.value
        else:
            raise SpaceError(f"{path}: give a value for {name}")
    for name in raw:
        if name not in space.active(dict(raw)):
            raise SpaceError(f"{path}.{name}: switched off by its when at these values; drop it")
    return Baseline(
        name=f"your baseline {index + 1}",
        params=dict(raw),
        source=f"strategies.{space.strategy}.baselines[{index}] of the experiment file",
    )


def _shown(domain: Param) -> str:
    if isinstance(domain, Categorical):
        return f"choices {list(domain.choices)}"
    if isinstance(domain, (IntRange, FloatRange)):
        return f"[{domain.low}, {domain.high}]"
    return f"fixed at {domain.value!r}"


def check_parameters(
    space: StrategySpace, references: Mapping[str, str], step_variables: Mapping[str, str]
) -> None:
    """Every parameter a phase uses is in the space, and every parameter in the space
    is used (by a phase, or by another's ``when``).

    Args:
        references: Parameter -> path of its first use in the strategy's section.
        step_variables: A repeat's step variable -> path of its ``as``.

    Raises:
        SpaceError: the first problem, naming its field and the fix.
    """
    prefix = f"strategies.{space.strategy}"
    for variable, path in step_variables.items():
        if variable in space.params:
            raise SpaceError(
                f"{prefix}.{path}: the step variable {variable!r} is also a space parameter;"
                " rename one"
            )
    for name, path in references.items():
        if name not in space.params:
            have = ", ".join(space.params) or "no parameters"
            raise SpaceError(
                f"{prefix}.{path}: uses {{{name}}}, which the space lacks; add {name} to"
                f" {prefix}.space (it has {have})"
            )
    gates = {when.param for when in space.conditions.values()}
    for name in space.params:
        if name not in references and name not in gates:
            raise SpaceError(
                f"{prefix}.space.{name}: no phase uses it; write {{{name}}} where it belongs"
                " or remove it"
            )


# -- the built-ins, written out ---------------------------------------------------


def _schedule(lr: str) -> dict[str, str]:
    """A built-in's lr schedule field by field; a field whose parameter is switched off
    (the other kinds') keeps its default, as the Python builder leaves it."""
    return {
        "kind": "{lr_schedule}",
        "final_lr": f"min({{final_lr}}, {lr})",
        "step_size": "{step_size}",
        "gamma": "{step_gamma}",
        "factor": "{plateau_factor}",
        "patience": "{plateau_patience}",
        "pct_start": "{one_cycle_pct_start}",
        "div": "{one_cycle_div}",
        "final_div": "{one_cycle_final_div}",
        "warmup_epochs": "{lr_warmup_epochs}",
    }


def _progressive_phases() -> list[dict[str, Any]]:
    stages = (
        ("frozen", "{frozen_epochs}", "none", "{base_lr}"),
        ("partial", "{partial_epochs}", "{unfreeze_depth}", "{base_lr} / {lr_decay}"),
        ("full", "{full_epochs}", "all", "{base_lr} / {lr_decay} ** 2"),
    )
    return [
        {
            "name": name,
            "epochs": epochs,
            "trainable": trainable,
            "lr": lr,
            "lr_schedule": _schedule(lr),
            "head_lr": {"cls": "{head_lr_cls}"},
        }
        for name, epochs, trainable, lr in stages
    ]


def _single_phase_phases() -> list[dict[str, Any]]:
    return [
        {
            "name": "end_to_end",
            "epochs": "{epochs}",
            "trainable": "all",
            "lr": "{lr}",
            "lr_schedule": _schedule("{lr}"),
            "early_stopping": {"patience": "{early_stopping_patience}", "metric": "val/loss"},
            "head_lr": {"cls": "{head_lr_cls}"},
        }
    ]


#: The built-ins the syntax can say, with their phases written out. Their spaces and
#: baselines are read from the Python spaces, so the two cannot drift apart; the
#: progressive ``preset`` (a lookup of the document's splits) is left out.
WRITTEN_BUILTINS = {
    "progressive": (progressive_space, _progressive_phases, ("preset",)),
    "single_phase": (single_phase_space, _single_phase_phases, ()),
}


def written_builtin(strategy: str, num_groups: int) -> dict[str, Any]:
    """The built-in ``strategy`` as an experiment file writes its own: phases, plan-wide
    fields, space and baselines. KeyError for a built-in the syntax cannot say."""
    space_of, phases_of, left_out = WRITTEN_BUILTINS[strategy]
    space = space_of(num_groups)
    plan_fields = {
        name: f"{{{name}}}"
        for name in ("batch_size", "dropout", "weight_decay", "label_smoothing", "focal_gamma")
        if name in space.params
    }
    return {
        "phases": phases_of(),
        **plan_fields,
        "space": {
            name: _written_domain(domain, _kept(space.conditions.get(name), left_out))
            for name, domain in space.params.items()
            if name not in left_out
        },
        "baselines": [
            {name: value for name, value in b.params.items() if name not in left_out}
            for b in space.baselines
        ],
    }


def _kept(when: When | None, left_out: tuple[str, ...]) -> When | None:
    """A condition, unless it is on a parameter left out (it then always holds)."""
    return None if when is None or when.param in left_out else when


def _written_domain(domain: Param, when: When | None) -> Any:
    if isinstance(domain, FloatRange):
        written: Any = {"low": domain.low, "high": domain.high}
        if domain.log:
            written["log"] = True
    elif isinstance(domain, IntRange):
        written = {"low": domain.low, "high": domain.high}
        if domain.step != 1:
            written["step"] = domain.step
        if domain.log:
            written["log"] = True
    elif isinstance(domain, Categorical):
        written = {"choices": list(domain.choices)}
    else:
        written = domain.value
    if when is None:
        return written
    values = when.values[0] if len(when.values) == 1 else list(when.values)
    if not isinstance(written, dict):
        written = {"value": written}
    return {**written, "when": {when.param: values}}
