"""The launch of a comparison (``torchrun``, ``accelerate launch``, or none): how many processes it has and which of
them writes, read from the launcher's environment variables."""

from __future__ import annotations

import os


def is_main_process() -> bool:
    """Whether this is the process that writes (rank 0 of a ``torchrun`` / ``accelerate launch`` run, or the only one).
    Read from the launcher's ``RANK`` variable: before the `Trainer` starts, no process group exists to ask."""
    return int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    """The number of processes of this launch (``torchrun`` / ``accelerate launch``; 1 without one), read from the
    launcher's ``WORLD_SIZE`` variable, as [`is_main_process`] reads ``RANK``."""
    return int(os.environ.get("WORLD_SIZE", "1"))
