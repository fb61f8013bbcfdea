"""Weights from a local file: a state dict read from ``torch.save`` output and loaded
into the network as built, strictly or as far as it fits.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from trainables.backbones._errors import BackboneError

__all__ = ["LoadReport", "load_weights", "read_state_dict"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """Keys a weights file lacked, had in excess, or had with another shape."""

    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    mismatched: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        parts = []
        for label, keys in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("wrong shape", self.mismatched),
        ):
            if keys:
                shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
                parts.append(f"{len(keys)} {label} ({shown})")
        return "; ".join(parts)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local file, unwrapped from ``state_dict``/``model`` and
    from DDP's ``module.`` prefix."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise BackboneError(f"model.weights: no such file {str(path)!r}") from None
    except Exception as error:
        raise BackboneError(
            f"model.weights: {str(path)!r} is not a state dict saved with torch.save"
            f" ({type(error).__name__})"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(raw, Mapping) and isinstance(raw.get(key), Mapping):
            raw = raw[key]
    if not isinstance(raw, Mapping) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise BackboneError(f"model.weights: {str(path)!r} holds no mapping of names to tensors")
    if raw and all(k.startswith("module.") for k in raw):
        raw = {k.removeprefix("module."): v for k, v in raw.items()}
    return dict(raw)


def load_weights(module: nn.Module, path: str | Path, *, strict: bool = True) -> LoadReport:
    """Load a local state dict into ``module`` (the network as built, classifier included).

    Strict: any missing, unexpected or reshaped key is an error. Otherwise what
    matches loads and the rest is logged and returned.
    """
    state = read_state_dict(path)
    own = module.state_dict()
    mismatched = tuple(sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape))
    report = LoadReport(
        missing=tuple(sorted(k for k in own if k not in state)),
        unexpected=tuple(sorted(k for k in state if k not in own)),
        mismatched=mismatched,
    )
    if report and strict:
        raise BackboneError(
            f"model.weights: {str(path)!r} does not fit the model: {report.summary()};"
            " set model.strict_weights: false to load what fits"
        )
    module.load_state_dict({k: v for k, v in state.items() if k not in mismatched}, strict=False)
    if report:
        logger.warning("model.weights: loaded %s except %s", path, report.summary())
    return report
