"""Python a user names in an experiment file as ``"package.module:function"``.

The escape hatches (``model.factory``, a strategy's ``plan_factory``) are the only user
code phasetune runs, and only by this import: never text from the file itself.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

__all__ = ["CALLABLE_PATH", "describe_error", "import_callable"]

#: How an experiment file names a callable.
CALLABLE_PATH = re.compile(r"[\w.]+:[\w.]+")


def describe_error(error: BaseException) -> str:
    """``Type: first line of the message``: errors are reported on one line."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def import_callable(path: str, field: str) -> Callable[..., Any]:
    """The callable named ``"package.module:function"``.

    Raises:
        ValueError: one line naming ``field``: a malformed path, a module that does not
            import, or no callable by that name.
    """
    module_name, colon, attribute = path.partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(f"{field}: write 'package.module:function', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        raise ValueError(
            f"{field}: cannot import {module_name!r} ({describe_error(error)});"
            " it must be importable on every node (e.g. shipped with ray job submit --working-dir)"
        ) from None
    target: Any = module
    for part in attribute.split("."):
        target = getattr(target, part, None)
    if not callable(target):
        raise ValueError(f"{field}: {module_name!r} has no callable {attribute!r}")
    return target
