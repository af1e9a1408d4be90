"""The plan: the tensor writes a strategy wants, as plain data, and how to apply them with a way back.

A strategy never writes into the model: it returns a [`Plan`], whose [`TensorReset`]s name each tensor, the entries
and their new values. [`apply_resets`] writes them in place and returns an [`Undo`] that puts back exactly the entries
it overwrote. Because a plan is plain data, rank 0 can plan and every process apply the same writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .flat_index import write_entries


@dataclass
class TensorReset:
    """One planned write into one tensor.

    Attributes:
        name: qualified tensor name in the model.
        tensor: the parameter or buffer to write into (in place).
        values: the new values: for ``index=None`` a tensor shaped like ``tensor``; else a flat tensor with one
            value per index.
        index: flat indices of the entries to write, or None for the whole tensor.
        block: index of the backbone block holding the tensor, or None.
        fresh: True when the new values are fresh draws from the init rule (they count as re-initialized
            entries); False for edits such as zeroing outgoing weights.
        reset_state: whether the optimizer state of the written entries is reset (Adam moments, momentum): True for
            re-drawn, shrunk and zeroed entries; False for an edit that keeps a parameter on its trajectory, such as
            continual backprop's next-layer bias correction (its reference resets the moments of the incoming
            weights and bias and the outgoing weights only).
    """

    name: str
    tensor: torch.Tensor
    values: torch.Tensor
    index: torch.Tensor | None = None
    block: int | None = None
    fresh: bool = True
    reset_state: bool = True

    @property
    def count(self) -> int:
        return self.tensor.numel() if self.index is None else int(self.index.numel())


@dataclass
class Plan:
    """What a strategy decided: the writes, and the decisions beyond its config (for the report and the record).

    Attributes:
        resets: the writes, in the order they are applied (a later write into the same entries wins).
        details: JSON-able decisions, e.g. ``{"num_blocks": 2}`` when a default resolved to two blocks (the restore
            converts numpy scalars and 0-d tensors to numbers and refuses any other value JSON cannot hold).

    Example:

    ```python
    >>> import torch
    >>> from hf_plasticity import Plan, TensorReset
    >>> weight = torch.zeros(2, 2)
    >>> plan = Plan([TensorReset("w", weight, torch.ones(2, 2))], details={"why": "example"})
    >>> plan.count, plan.details
    (4, {'why': 'example'})
    ```
    """

    resets: list[TensorReset] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        """Entries written by the fresh draws of the plan."""
        return sum(r.count for r in self.resets if r.fresh)


def state_entries(resets: list[TensorReset]) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """``(tensor, flat index or None)`` of every write whose optimizer state is to be reset (``reset_state``)."""
    return [(r.tensor, r.index) for r in resets if r.reset_state]


def fresh_first(resets: list[TensorReset]) -> list[TensorReset]:
    """Fresh draws first, then the other writes (zeroed outgoing columns, bias corrections): where a layer is both
    the consumer of one unit group and the producer of the next, the zeroed columns must win."""
    return [r for r in resets if r.fresh] + [r for r in resets if not r.fresh]


class Undo:
    """Puts back, in reverse order, the entries that [`apply_resets`] overwrote."""

    def __init__(self) -> None:
        self._backups: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]] = []

    def save(self, tensor: torch.Tensor, index: torch.Tensor | None) -> None:
        data = tensor.data
        self._backups.append((tensor, index, data.clone() if index is None else data.reshape(-1)[index].clone()))

    @torch.no_grad()
    def rollback(self) -> None:
        for tensor, index, old in reversed(self._backups):
            if index is None:
                tensor.data.copy_(old)
            else:
                write_entries(tensor.data, index, old)
        self._backups.clear()


def _check(reset: TensorReset) -> None:
    tensor = reset.tensor
    if reset.index is None and tuple(reset.values.shape) != tuple(tensor.shape):
        raise ValueError(
            f"Planned values for {reset.name} have shape {tuple(reset.values.shape)}, expected {tuple(tensor.shape)}."
        )
    if reset.index is not None and reset.index.numel() != reset.values.numel():
        raise ValueError(
            f"Planned write into {reset.name} has {reset.index.numel()} indices but {reset.values.numel()} values."
        )


@torch.no_grad()
def apply_resets(resets: list[TensorReset], undo: Undo | None = None) -> Undo:
    """Writes every planned value in place (dtype, device and the tensor objects are kept).

    Values that would be infinite or NaN in the tensor's dtype are refused (ValueError). On a failure half-way, the
    entries already written are put back before the error propagates. On success the returned [`Undo`] can put them
    back later (the restore pipeline does, when a later step of the restore fails).

    Args:
        resets: the writes.
        undo: an [`Undo`] to add the backups to (default: a new one).
    """
    undo = Undo() if undo is None else undo
    done = Undo()
    try:
        for reset in resets:
            _check(reset)
            tensor = reset.tensor.data
            values = reset.values.to(device=tensor.device, dtype=tensor.dtype)
            if values.is_floating_point() and not bool(torch.isfinite(values).all()):
                raise ValueError(
                    f"The restore would write infinite or NaN values into {reset.name} (the strategy's settings "
                    f"overflow {tensor.dtype}: a very large perturb, say); nothing was changed."
                )
            index = None if reset.index is None else reset.index.to(tensor.device)
            done.save(reset.tensor, index)
            if index is None:
                tensor.copy_(values)
            else:
                write_entries(tensor, index, values)
    except BaseException:
        done.rollback()
        raise
    undo._backups.extend(done._backups)
    return undo
