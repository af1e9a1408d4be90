"""Optimizer-state reset for re-drawn entries: without it, stale Adam moments push fresh weights straight back.

The reset is computed out of place ([`zeroed_state`] builds the new state tensors and leaves the optimizer as it is);
the restore pipeline then swaps them in as part of its transaction, so a failure anywhere puts the old ones back.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from .flat_index import write_entries

StateSwap = tuple[dict, str, torch.Tensor]


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The raw torch optimizer behind Accelerate's (or Trainer's) wrapper."""
    while hasattr(optimizer, "optimizer") and not isinstance(optimizer, torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"`optimizer` must be a torch.optim.Optimizer (or a wrapper of one), got {type(optimizer)}.")
    return optimizer


def check_optimizer_for(optimizer: Any, model: Any) -> torch.optim.Optimizer:
    """The raw optimizer, after checking that it trains ``model``: it must hold at least one of its parameters.

    Raises:
        TypeError: when ``optimizer`` is not a torch optimizer (or a wrapper of one).
        ValueError: when it holds none of ``model``'s parameters (another model's optimizer).
    """
    optimizer = unwrap_optimizer(optimizer)
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if not any(id(p) in held for p in model.parameters()):
        raise ValueError(
            "The optimizer holds none of this model's parameters: pass the optimizer that trains this model (its "
            "state is what the restore resets), or none."
        )
    return optimizer


def _entries_by_parameter(
    resets: Iterable[tuple[torch.Tensor, torch.Tensor | None]],
) -> dict[int, tuple[torch.Tensor, torch.Tensor | None]]:
    """One ``(parameter, flat indices or None for all)`` per parameter: the union of every write into it."""
    merged: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
    for param, index in resets:
        seen = merged.get(id(param))
        if seen is None:
            merged[id(param)] = (param, None if index is None else index.reshape(-1).cpu())
        elif seen[1] is not None:
            merged[id(param)] = (param, None if index is None else torch.cat([seen[1], index.reshape(-1).cpu()]))
    return merged


@torch.no_grad()
def zeroed_state(optimizer: Any, resets: Iterable[tuple[torch.Tensor, torch.Tensor | None]]) -> list[StateSwap]:
    """New per-entry state tensors (Adam/AdamW ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``, SGD
    ``momentum_buffer``, ...) with the given entries zeroed and every other entry kept; the optimizer is not modified.

    Args:
        optimizer: a torch optimizer or a wrapper with an ``.optimizer`` attribute.
        resets: ``(parameter, flat_index)`` pairs; ``flat_index=None`` means the whole parameter.

    Returns:
        ``(state, key, new_tensor)`` triples: setting ``state[key] = new_tensor`` for each applies the reset.

    Example:

    ```python
    >>> import torch
    >>> weight = torch.nn.Parameter(torch.ones(3))
    >>> optimizer = torch.optim.SGD([weight], lr=0.1, momentum=0.9)
    >>> weight.grad = torch.ones(3); optimizer.step()
    >>> [(key, new.tolist()) for _, key, new in zeroed_state(optimizer, [(weight, torch.tensor([1]))])]
    [('momentum_buffer', [1.0, 0.0, 1.0])]
    ```
    """
    optimizer = unwrap_optimizer(optimizer)
    swaps: list[StateSwap] = []
    for param, index in _entries_by_parameter(resets).values():
        state = optimizer.state.get(param)
        if not state:
            continue
        for key, value in state.items():
            if not torch.is_tensor(value) or value.shape != param.shape:
                continue
            if index is None:
                new = torch.zeros_like(value)
            else:
                new = value.detach().clone()  # keeps the old state's memory format
                write_entries(new, index, torch.zeros(index.numel()))
            swaps.append((state, key, new))
    return swaps
