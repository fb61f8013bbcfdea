"""What a run needs besides its plan (`EngineContext`), where it reports (`Reporter`),
and how the context's device settings resolve on the device a worker has."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol

import torch

from analysis.targets import Target
from trainables.data import ImageDataset

__all__ = ["PRECISIONS", "EngineContext", "Reporter", "place_data", "resolve_precision"]

#: Values of ``EngineContext.precision``.
PRECISIONS = ("auto", "fp32", "bf16")


@dataclasses.dataclass(frozen=True)
class EngineContext:
    """What a run needs besides its plan.

    Attributes:
        targets: The targets ``target_score`` is computed against.
        tensorboard_dir: Where rank 0 writes TensorBoard events; None writes none.
        hparams: Hyperparameters shown in TensorBoard's HParams dashboard.
        threads: Torch intra-op threads for this worker (its CPU share).
        use_gpu: Train on this worker's GPU when one is visible.
        precision: "fp32", "bf16" (autocast of forward passes to bfloat16; weights,
            optimiser and losses stay fp32) or "auto" (bf16 on a GPU that supports
            it, else fp32).
        channels_last: Keep weights and batches in channels-last memory format (faster
            convolutions on tensor-core GPUs); None: on a GPU only.
        data_on_device: Hold the whole data set in GPU memory, so batches need no host
            copy; None: when it fits in a quarter of the free GPU memory. Otherwise
            each batch is gathered on the host and copied.
    """

    targets: tuple[Target, ...] = ()
    tensorboard_dir: str | None = None
    hparams: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    threads: int | None = None
    use_gpu: bool = False
    precision: str = "auto"
    channels_last: bool | None = None
    data_on_device: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> EngineContext:
        raw = dict(raw)
        raw["targets"] = tuple(Target(**target) for target in raw.get("targets", ()))
        return cls(**raw)


class Reporter(Protocol):
    """Where a run's metrics and checkpoints go (Ray Train, Ray Tune, or memory).

    ``restore`` returns the checkpoint to resume from as ``torch.load`` reads it (the
    dict `CheckpointState.to_dict` wrote), or None to start afresh.
    """

    rank: int
    world_size: int

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None: ...

    def restore(self) -> Mapping[str, Any] | None: ...


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None trains in fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: unknown {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    # On CPUs bf16 autocast is mostly slower than fp32; on GPUs without bf16
    # (before Ampere) it would be emulated.
    if precision == "auto" and (device.type != "cuda" or not torch.cuda.is_bf16_supported()):
        return None
    return torch.bfloat16


def place_data(data: ImageDataset, device: torch.device, on_device: bool | None) -> ImageDataset:
    """The data set's uint8 samples in GPU memory when asked, or when they fit in a quarter
    of what is free; else as they are, mapped on the host."""
    if on_device is None:
        free, _ = torch.cuda.mem_get_info(device)
        on_device = data.nbytes <= free // 4
    # A new object: the cached one on the host stays as it is for other trials.
    return data.to(device) if on_device else data
