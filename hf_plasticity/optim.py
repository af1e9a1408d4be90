"""Optimizer-state reset for re-drawn entries: without it, stale Adam moments push fresh weights straight back."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The raw torch optimizer behind Accelerate's (or Trainer's) wrapper."""
    while hasattr(optimizer, "optimizer") and not isinstance(optimizer, torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"`optimizer` must be a torch.optim.Optimizer (or a wrapper of one), got {type(optimizer)}.")
    return optimizer


@torch.no_grad()
def reset_optimizer_state(optimizer: Any, resets: Iterable[tuple[torch.Tensor, torch.Tensor | None]]) -> int:
    """Zeroes every per-entry state tensor (Adam/AdamW ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``, SGD
    ``momentum_buffer``, ...) of the given entries only; the rest of the state is untouched.

    Args:
        optimizer: a torch optimizer or a wrapper with an ``.optimizer`` attribute.
        resets: ``(parameter, flat_index)`` pairs; ``flat_index=None`` means the whole parameter.

    Returns:
        The number of state tensors edited.
    """
    optimizer = unwrap_optimizer(optimizer)
    edited = 0
    for param, index in resets:
        state = optimizer.state.get(param)
        if not state:
            continue
        for value in state.values():
            if not torch.is_tensor(value) or value.shape != param.shape:
                continue
            if index is None:
                value.zero_()
            else:
                flat = value.view(-1) if value.is_contiguous() else None
                if flat is None:
                    filled = value.clone()
                    filled.view(-1)[index.to(value.device)] = 0
                    value.copy_(filled)
                else:
                    flat[index.to(value.device)] = 0
            edited += 1
    return edited
