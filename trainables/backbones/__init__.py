"""Ordered layer groups for any backbone ``nn.Module``, and the adapter the heads read.

A progressive recipe unfreezes "the top k layer groups". For the built-in
``small_cnn`` the groups are its own; for any other convolutional network they are
made from its units and blocks (``_groups`` says how). The feature pyramid the dense
heads read is the output of the last unit at each stride (input pixels per cell),
found with one dry forward pass.

- `BackboneError` (``_errors``): a backbone that cannot be built or grouped.
- ``_groups``: units, blocks and `layer_groups` (`LayerGroup`, `find_blocks`), and
  the "layer 140" index (`leaf_layers`, `group_of_layer`, `unfreeze_depth_from_layer`).
- ``_adapter``: `adapt_backbone` and `GroupedBackbone`, with the dry run that
  measures the pyramid.
- ``_sources``: where the network comes from (`torchvision_model`, `import_factory`).
- ``_weights``: weights from a local file (`load_weights`, `read_state_dict`,
  `LoadReport`).
"""

from __future__ import annotations

# PROBE_SIZE, HEAD_NAMES, Unit and find_units are not in __all__, but stay reachable as
# trainables.backbones.<name> as they were before the module became a package.
from trainables.backbones._adapter import (
    PROBE_SIZE,  # noqa: F401
    GroupedBackbone,
    adapt_backbone,
)
from trainables.backbones._errors import BackboneError
from trainables.backbones._groups import (
    HEAD_NAMES,  # noqa: F401
    LayerGroup,
    Unit,  # noqa: F401
    find_blocks,
    find_units,  # noqa: F401
    group_of_layer,
    layer_groups,
    leaf_layers,
    unfreeze_depth_from_layer,
)
from trainables.backbones._sources import import_factory, torchvision_model
from trainables.backbones._weights import LoadReport, load_weights, read_state_dict
from trainables.callables import describe_error

__all__ = [
    "BackboneError",
    "GroupedBackbone",
    "LayerGroup",
    "LoadReport",
    "adapt_backbone",
    "describe_error",
    "find_blocks",
    "group_of_layer",
    "import_factory",
    "layer_groups",
    "leaf_layers",
    "load_weights",
    "read_state_dict",
    "torchvision_model",
    "unfreeze_depth_from_layer",
]
