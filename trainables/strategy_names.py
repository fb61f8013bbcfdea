"""The built-in strategies' names: a leaf, so that the analysis tells a built-in strategy
from an experiment's own without importing the plan builders (and torch)."""

from __future__ import annotations

__all__ = ["BUILTIN_STRATEGY_NAMES"]

#: Every built-in strategy; ``trainables.strategies.BUILTIN_STRATEGIES`` builds their
#: plans and ``spaces.SPACES`` holds their spaces, under these names.
BUILTIN_STRATEGY_NAMES = ("progressive", "single_phase", "joint", "sequential")
