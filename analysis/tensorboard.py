"""TensorBoard on an experiment, served on loopback only."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

__all__ = ["free_port", "tensorboard_command"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tensorboard_command(experiment_dir: str | os.PathLike[str], port: int) -> list[str]:
    """The command that serves ``<experiment>/tensorboard`` (every trial a run) and
    any retrain's events, on 127.0.0.1 only."""
    logdir = Path(experiment_dir)
    if (logdir / "tensorboard").is_dir():
        logdir = logdir / "tensorboard"
    executable = shutil.which("tensorboard", path=str(Path(sys.executable).parent))
    program = [executable] if executable else [sys.executable, "-m", "tensorboard.main"]
    return [*program, "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port)]
