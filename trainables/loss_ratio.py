"""The multi-task document's loss-ratio weights, in plain Python: the weighting the
engine trains with and the claims check that reads its numbers share this formula."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["loss_ratio_weights", "usable_losses"]


def usable_losses(losses: Sequence[float]) -> bool:
    """Whether every loss can appear in a ratio (a zero or NaN would give an infinite weight)."""
    return all(math.isfinite(loss) and loss > 0.0 for loss in losses)


def loss_ratio_weights(losses: Sequence[float], alpha: float) -> list[float]:
    """The multi-task document's dynamic weights, ``w_i = (mean_j L_j / L_i) ** alpha``.

    Not normalised, as in the document. Its reported final weights [0.89, 1.23, 0.92]
    for losses seg/det/cls = 1.1234/4.5678/2.3012 do not follow from this formula, which
    gives about [1.54, 0.76, 1.08] with ``alpha=0.5``; a negative ``alpha`` (larger loss,
    larger weight) covers the reading that matches the reported ordering.

    Args:
        losses: One mean loss per task, each finite and > 0.
        alpha: Exponent; 0.5 is the document's value, 0 gives equal weights.

    Raises:
        ValueError: A loss is not finite or not positive.
    """
    if not losses or not usable_losses(losses):
        raise ValueError(f"loss_ratio_weights: losses must be finite and > 0, got {list(losses)}")
    mean = sum(losses) / len(losses)
    return [(mean / loss) ** alpha for loss in losses]
