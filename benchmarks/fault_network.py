"""A network that fails on cue, for ``benchmarks/faults.py`` and its tests.

It enters a search the way any user's network does (``model.factory``), so phasetune
runs exactly as it would for a user: the fault is in the trial, not in phasetune.
``build(fault=..., control=..., ...)`` returns a small CNN that, at one point of
training, announces itself and then waits to be killed, or raises:

- ``block_step``: at the training step ``at_step`` (counted from 1 in the process, on
  rank ``rank``) it writes ``control/armed.json`` (``{"pid", "where"}``) and waits;
- ``block_checkpoint``: the same, inside the first checkpoint written after training
  step ``at_step`` (the engine's ``_checkpoint_state``), so a kill lands mid-checkpoint;
- ``raise_step``: at training step ``at_step`` of the first trial to get there it raises
  ``RuntimeError``, again on every retry of that trial, as a bug in a user's code would.

A kill fault fires once per ``control`` folder (``control/fired`` marks it), so the
process that replaces a killed one trains on: a fault test observes the marker, kills, and
the search must recover. The waiting is bounded (``wait_s``), so a fault that nobody
acts on ends in an error instead of a hang.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path

import torch
from torch import nn

__all__ = ["FAULTS", "FaultyNet", "build"]

FAULTS = ("none", "block_step", "block_checkpoint", "raise_step")


def _block(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class FaultyNet(nn.Module):
    """Four conv blocks, pooling and a classifier; the fault hooks sit on the first block."""

    def __init__(
        self,
        width: int = 4,
        fault: str = "none",
        control: str = "",
        at_step: int = 1,
        rank: int = 0,
        wait_s: float = 300.0,
    ) -> None:
        super().__init__()
        if fault not in FAULTS:
            raise ValueError(f"fault: use one of {', '.join(FAULTS)}, got {fault!r}")
        self.features = nn.Sequential(
            _block(3, width),
            _block(width, 2 * width),
            _block(2 * width, 4 * width),
            _block(4 * width, 8 * width),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(8 * width, 10)
        self.fault, self.at_step, self.rank, self.wait_s = fault, at_step, rank, wait_s
        self.control = Path(control) if control else None
        self.steps = 0
        if fault != "none":
            first = self.features[0]
            first.register_forward_pre_hook(self._on_forward)
            first._register_state_dict_hook(self._on_state_dict)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(images)), 1))

    def _on_forward(self, module: nn.Module, inputs: object) -> None:
        # A training step runs with autograd on, evaluation without: the block's own
        # mode says nothing, as a frozen group stays in eval mode while the top trains.
        if not torch.is_grad_enabled() or not self._my_rank():
            return
        self.steps += 1
        if self.steps != self.at_step or (self.fault != "raise_step" and self._fired()):
            return
        if self.fault == "block_step":
            self._arm_and_wait(f"training step {self.steps}")
        elif self.fault == "raise_step" and self._is_victim():
            raise RuntimeError(f"a bug in the user's network at step {self.steps}")

    def _on_state_dict(self, *args: object) -> None:
        if self.fault != "block_checkpoint" or self.steps < self.at_step or not self._my_rank():
            return
        # Only the engine's checkpoint, not the copies of the best weights it keeps.
        callers = {frame.f_code.co_name for frame, _ in traceback.walk_stack(None)}
        if "_checkpoint_state" not in callers or self._fired():
            return
        self._arm_and_wait(f"checkpoint after step {self.steps}")

    def _is_victim(self) -> bool:
        """Whether this is the trial the bug hits: the first to get here, again on each
        retry, so a retried trial fails again as a real bug would, and no other does."""
        from ray import tune

        assert self.control is not None
        trial = tune.get_context().get_trial_id() or "outside Tune"
        victim = self.control / "victim"
        if not victim.exists():
            self.control.mkdir(parents=True, exist_ok=True)
            victim.write_text(trial)
        return victim.read_text() == trial

    def _my_rank(self) -> bool:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        return (torch.distributed.get_rank() if distributed else 0) == self.rank

    def _fired(self) -> bool:
        return self.control is not None and (self.control / "fired").exists()

    def _mark_fired(self) -> None:
        assert self.control is not None
        self.control.mkdir(parents=True, exist_ok=True)
        (self.control / "fired").touch()

    def _arm_and_wait(self, where: str) -> None:
        self._mark_fired()
        assert self.control is not None
        partial = self.control / "armed.json.partial"
        partial.write_text(json.dumps({"pid": os.getpid(), "where": where}))
        os.replace(partial, self.control / "armed.json")
        deadline = time.monotonic() + self.wait_s
        while time.monotonic() < deadline:
            time.sleep(0.05)
        raise RuntimeError(f"fault armed at {where} was never acted on within {self.wait_s} s")


def build(**kwargs: object) -> FaultyNet:
    """``model.factory: fault_network:build``; ``model.factory_args`` are the keywords."""
    return FaultyNet(**kwargs)  # type: ignore[arg-type]
