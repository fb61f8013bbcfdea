"""ConfigError, and the one line a pydantic ValidationError of the experiment file
becomes: the field, what is wrong and the fix."""

from __future__ import annotations

from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from search.config._experiment import ExperimentConfig

__all__ = ["ConfigError", "format_validation_error"]


class ConfigError(Exception):
    """A user mistake in an experiment file or on the command line (exit status 2)."""


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
