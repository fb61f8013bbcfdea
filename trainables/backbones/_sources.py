"""Where the network comes from: a torchvision classification model by name (never
with downloaded weights) or a factory named ``"package.module:function"``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from trainables.backbones._errors import BackboneError
from trainables.callables import describe_error, import_callable

__all__ = ["import_factory", "torchvision_model"]


def torchvision_model(name: str) -> nn.Module:
    """``torchvision.models.get_model(name, weights=None)``: never downloads."""
    try:
        import torchvision.models
    except Exception as error:  # a CUDA-only build raises RuntimeError, not ImportError
        raise BackboneError(
            f"model.backbone: torchvision:{name} needs torchvision, which does not import"
            f" ({describe_error(error)}); install the torchvision extra (a torchvision built"
            " for this torch)"
        ) from None
    # Classification models only: detection and segmentation models bring their own heads.
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise BackboneError(
            f"model.backbone: torchvision has no classification model {name!r};"
            " see torchvision.models.list_models(module=torchvision.models)"
        )
    return torchvision.models.get_model(name, weights=None)


def import_factory(path: str) -> Callable[..., nn.Module]:
    """The network factory named ``"package.module:function"``."""
    try:
        return import_callable(path, "model.factory")
    except ValueError as error:
        raise BackboneError(str(error)) from None
