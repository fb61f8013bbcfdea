"""The base of every section of the experiment file."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["_Section"]


class _Section(BaseModel):
    # Unknown keys are errors, so that a misspelt field is reported instead of dropped;
    # frozen, so that a validated config cannot drift from what was checked.
    model_config = ConfigDict(extra="forbid", frozen=True)
