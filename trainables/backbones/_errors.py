"""The one error of the package: a backbone that cannot be built or grouped.

Its own module so that grouping, adapting, naming and loading a backbone all raise it
without importing one another.
"""

from __future__ import annotations

__all__ = ["BackboneError"]


class BackboneError(ValueError):
    """A backbone that cannot be built or grouped; the message names the config field."""
