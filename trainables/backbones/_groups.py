"""Ordered layer groups for any backbone ``nn.Module``: units, blocks and groups, and
the "layer 140" index that says which group holds a given layer.

A progressive recipe unfreezes "the top k layer groups". For the built-in
``small_cnn`` the groups are its own; for any other convolutional network they are
made here, in three steps:

1. **Units**: the modules its forward calls one after the other. By default these
   are the model's top-level children in registration order, less trailing
   pooling/classifier children (``fc``, ``classifier``, ``head``, ``avgpool``, or
   any child without a convolution that holds a Linear); when a single
   ``nn.Sequential`` remains (``features`` of MobileNet, EfficientNet, VGG,
   ConvNeXt), its children are the units. ``blocks="a.b"`` names that container.
2. **Blocks**: a unit with parameters starts a new block; normalisation layers and
   parameter-free units (activations, pooling) join the block before them. A
   ResNet gives stem (conv1-bn1-relu-maxpool), layer1, ..., layer4; a MobileNetV2
   gives its ``features`` entries.
3. **Groups**: ``num_groups`` contiguous runs of blocks, input side first. By
   default every group holds the same number of blocks (the input-side groups take
   the remainder, so the top groups, which unfreeze first, are the finest);
   ``balance="params"`` cuts at equal shares of the parameter count instead.
   ``groups=[...]`` names the groups outright.

The "layer 140" index maps a leaf layer's position (Keras's count) to the group
that holds it, and so to the ``unfreeze_depth`` that trains it and every layer after
it.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Literal

from torch import nn

from trainables.backbones._errors import BackboneError

__all__ = [
    "HEAD_NAMES",
    "LayerGroup",
    "Unit",
    "find_blocks",
    "find_units",
    "group_of_layer",
    "layer_groups",
    "leaf_layers",
    "unfreeze_depth_from_layer",
]

#: Names of trailing children that classify rather than extract features.
HEAD_NAMES = frozenset({"fc", "classifier", "head", "heads", "avgpool", "global_pool", "pool"})
_HEAD_TYPES = (
    nn.Linear,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Flatten,
    nn.Dropout,
    nn.Identity,
)
_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)

Unit = tuple[str, nn.Module]


class LayerGroup(nn.Sequential):
    """A run of units that freezes and unfreezes as one; ``paths`` are their names
    in the original model (the children are named with ``_`` for ``.``)."""

    def __init__(self, units: Sequence[Unit]) -> None:
        super().__init__(collections.OrderedDict((p.replace(".", "_"), m) for p, m in units))
        self.paths = tuple(path for path, _ in units)


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _is_head(name: str, module: nn.Module) -> bool:
    if name in HEAD_NAMES or isinstance(module, _HEAD_TYPES):
        return True
    kinds = list(module.modules())
    has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in kinds)
    return not has_conv and any(isinstance(m, nn.Linear) for m in kinds)


def _children(module: nn.Module, prefix: str) -> list[Unit]:
    """Callable children with their dotted paths; a ModuleList is stepped into."""
    units = []
    for name, child in module.named_children():
        path = f"{prefix}{name}"
        if isinstance(child, nn.ModuleList):
            units += _children(child, path + ".")
        elif isinstance(child, nn.ModuleDict):
            raise BackboneError(
                f"model.blocks: {path!r} is a ModuleDict, whose order is not the forward's;"
                " name the groups in model.groups"
            )
        else:
            units.append((path, child))
    return units


def find_units(module: nn.Module, blocks: str | None = None) -> list[Unit]:
    """The modules ``module``'s forward calls in sequence, with their dotted paths.

    Args:
        blocks: Dotted path of the container whose children are the units (e.g.
            ``"features"``); everything outside it is dropped. None finds them as
            the module docstring says.
    """
    if blocks is not None:
        try:
            container = module.get_submodule(blocks)
        except AttributeError:
            raise BackboneError(f"model.blocks: the model has no module {blocks!r}") from None
        units = _children(container, blocks + ".")
    else:
        units = _children(module, "")
        while units and _is_head(units[-1][0].rsplit(".", 1)[-1], units[-1][1]):
            units.pop()
        if len(units) == 1 and isinstance(units[0][1], nn.Sequential):
            units = _children(units[0][1], units[0][0] + ".")
    if not any(_has_params(unit) for _, unit in units):
        raise BackboneError("model.blocks: found no blocks with parameters in the model")
    return units


def find_blocks(module: nn.Module, blocks: str | None = None) -> list[list[Unit]]:
    """The units of ``module`` merged into blocks, input side first (see the module doc)."""
    merged: list[list[Unit]] = []
    waiting: list[Unit] = []  # parameter-free units before the first block
    for path, unit in find_units(module, blocks):
        starts = _has_params(unit) and (
            any(True for _ in unit.children()) or not isinstance(unit, _NORM_TYPES)
        )
        if starts:
            merged.append([*waiting, (path, unit)])
            waiting = []
        elif merged:
            merged[-1].append((path, unit))
        else:
            waiting.append((path, unit))
    return merged


def _even_counts(num_blocks: int, num_groups: int) -> list[int]:
    base, extra = divmod(num_blocks, num_groups)
    return [base + (1 if i < extra else 0) for i in range(num_groups)]


def _param_counts(sizes: list[int], num_groups: int) -> list[int]:
    """Blocks per group so that cumulative parameters cut nearest to equal shares."""
    total = sum(sizes)
    cumulative = [0]
    for size in sizes:
        cumulative.append(cumulative[-1] + size)
    cuts = [0]
    for i in range(1, num_groups):
        low, high = cuts[-1] + 1, len(sizes) - (num_groups - i)
        target = total * i / num_groups
        cuts.append(min(range(low, high + 1), key=lambda c: abs(cumulative[c] - target)))
    cuts.append(len(sizes))
    return [b - a for a, b in zip(cuts, cuts[1:], strict=False)]


def _expand_item(item: str) -> list[str]:
    """``"features.0-3"`` -> the four paths; any other item is itself."""
    item = item.strip()
    parent, _, last = item.rpartition(".")
    first, dash, end = last.partition("-")
    if not dash:
        return [item]
    if not (first.isdigit() and end.isdigit() and int(first) <= int(end)):
        raise BackboneError(f"model.groups: {item!r}: a range is written 'parent.first-last'")
    prefix = f"{parent}." if parent else ""
    return [f"{prefix}{i}" for i in range(int(first), int(end) + 1)]


def _named_groups(module: nn.Module, groups: Sequence[str], blocks: str | None) -> list[list[Unit]]:
    """Resolve ``groups`` (comma-separated paths per group) against the units.

    Read in order, the groups must name every unit with parameters once; a
    Sequential unit may be split by naming its children, and parameter-free units
    left out join the group before them.
    """
    queue = collections.deque(find_units(module, blocks))
    resolved: list[list[Unit]] = []

    def keep_parameter_free(unit: Unit) -> None:
        target = resolved[-1] if resolved[-1] or len(resolved) == 1 else resolved[-2]
        target.append(unit)

    for group in groups:
        resolved.append([])
        items = [path for item in group.split(",") if item.strip() for path in _expand_item(item)]
        if not items:
            raise BackboneError(f"model.groups: group {len(resolved) - 1} names no module")
        for path in items:
            while True:
                if not queue:
                    raise BackboneError(
                        f"model.groups: {path!r} is not a block after the ones named before it;"
                        " name every block once, in forward order"
                    )
                head_path, head = queue[0]
                if path == head_path:
                    resolved[-1].append(queue.popleft())
                    break
                if path.startswith(head_path + ".") and isinstance(head, nn.Sequential):
                    queue.popleft()
                    queue.extendleft(reversed(_children(head, head_path + ".")))
                    continue
                if not _has_params(head):
                    keep_parameter_free(queue.popleft())
                    continue
                raise BackboneError(
                    f"model.groups: expected {head_path!r} (the next module in forward order),"
                    f" got {path!r}; name every block once, in forward order"
                )
    for unit in list(queue):
        if _has_params(unit[1]):
            raise BackboneError(
                f"model.groups: {unit[0]!r} is in no group; name every block once, in forward order"
            )
        resolved[-1].append(unit)
    return resolved


def layer_groups(
    module: nn.Module,
    num_groups: int | None = None,
    *,
    blocks: str | None = None,
    groups: Sequence[str] | None = None,
    balance: Literal["blocks", "params"] = "blocks",
) -> nn.ModuleList:
    """Split ``module`` into ordered layer groups (input side = 0) of its blocks.

    Args:
        module: Any convolutional network whose forward runs its blocks in sequence.
        num_groups: Groups to make by merging contiguous blocks; None: one per block.
        blocks: Dotted path of the container whose children are the units.
        groups: The groups named outright, each a comma-separated list of module
            paths where a last component ``a-b`` is a range of numbered children:
            ``["conv1", "layer1,layer2", "layer3", "layer4.0", "layer4.1"]`` or
            ``["features.0-3", "features.4-13", "features.14-18"]``.
        balance: ``blocks`` (equal block counts) or ``params`` (equal parameter
            shares) when merging blocks into ``num_groups``.

    Returns:
        A ModuleList of :class:`LayerGroup`; running them in order is the backbone.

    Raises:
        BackboneError: more groups than blocks, or named groups that do not cover
            the blocks in forward order.
    """
    if groups is not None:
        if num_groups is not None and num_groups != len(groups):
            raise BackboneError(
                f"model.num_groups: is {num_groups} but model.groups names {len(groups)}"
            )
        return nn.ModuleList(LayerGroup(units) for units in _named_groups(module, groups, blocks))
    found = find_blocks(module, blocks)
    num_groups = len(found) if num_groups is None else num_groups
    if not 1 <= num_groups <= len(found):
        raise BackboneError(
            f"model.num_groups: the model has {len(found)} blocks, so 1 to {len(found)} groups,"
            f" got {num_groups}; lower it or name the groups in model.groups"
        )
    if balance == "params":
        sizes = [sum(p.numel() for _, u in block for p in u.parameters()) for block in found]
        counts = _param_counts(sizes, num_groups)
    else:
        counts = _even_counts(len(found), num_groups)
    result, start = [], 0
    for count in counts:
        result.append(LayerGroup([u for block in found[start : start + count] for u in block]))
        start += count
    return nn.ModuleList(result)


# -- the "layer 140" index ------------------------------------------------------


def leaf_layers(backbone: nn.Module) -> list[tuple[int, nn.Module]]:
    """Every leaf module of ``backbone``'s layer groups in order, with its group index.

    Keras counts layers this way (activations included), so a Keras layer index
    maps to a position in this list.
    """
    return [
        (index, leaf)
        for index, group in enumerate(backbone.layer_groups)
        for leaf in group.modules()
        if not any(True for _ in leaf.children())
    ]


def group_of_layer(backbone: nn.Module, layer: int, *, of: int | None = None) -> int:
    """The group (input side = 0) that holds leaf layer ``layer`` (0-based).

    Args:
        of: Layers of the reference model the index counts in (e.g. 155 for Keras's
            MobileNetV2): the index then stands for the share ``layer / of`` of this
            backbone's leaf layers. None: ``layer`` indexes :func:`leaf_layers` itself.
    """
    leaves = leaf_layers(backbone)
    position = layer if of is None else int(layer / of * len(leaves))
    if not 0 <= position < len(leaves):
        raise BackboneError(f"layer {layer}: the backbone has {len(leaves)} leaf layers")
    return leaves[position][0]


def unfreeze_depth_from_layer(backbone: nn.Module, layer: int, *, of: int | None = None) -> int:
    """The ``unfreeze_depth`` that trains layer ``layer`` and every layer after it.

    "Unfreeze from layer 140 on" of a 155-layer MobileNetV2 is
    ``unfreeze_depth_from_layer(backbone, 140, of=155)``; the group holding that
    layer trains whole, so a few layers before it train too.
    """
    return len(backbone.layer_groups) - group_of_layer(backbone, layer, of=of)
