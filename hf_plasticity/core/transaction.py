"""The restore transaction: everything a restore may change, saved when it starts and put back if it fails.

A restore plans, writes tensors, re-estimates BatchNorm statistics, swaps optimizer state, records what it did and
updates the strategy's running state. [`Transaction`] makes that one all-or-nothing step:

- always (success or failure): the global RNG state (CPU and the model's CUDA devices), every module's ``training``
  flag, every parameter's ``requires_grad`` flag and ``.grad`` tensor are what they were before;
- on failure: every tensor entry written, every optimizer state tensor swapped, every attribute set and every undo
  step registered with [`Transaction.on_failure`] is put back, in reverse order, before the error propagates.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .optim import StateSwap
from .plan import TensorReset, Undo, apply_resets

_MISSING = object()


class Transaction:
    """Use as a context manager around every step of a restore.

    Example:

    ```python
    >>> import torch
    >>> from torch import nn
    >>> from hf_plasticity.core.plan import TensorReset
    >>> from hf_plasticity.core.transaction import Transaction
    >>> model = nn.Linear(2, 2)
    >>> before = model.weight.detach().clone()
    >>> try:
    ...     with Transaction(model) as transaction:
    ...         transaction.apply([TensorReset("weight", model.weight, torch.zeros(2, 2))])
    ...         raise RuntimeError("a later step fails")
    ... except RuntimeError:
    ...     pass
    >>> torch.equal(model.weight, before)
    True
    ```
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._undo: list[Callable[[], None]] = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Transaction:
        model = self.model
        devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
        self._stack.enter_context(torch.random.fork_rng(devices=devices))
        self._modes = [(m, m.training) for m in model.modules()]
        self._params = [(p, p.requires_grad, p.grad) for p in model.parameters()]
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        try:
            if exc_type is not None:
                self.rollback()
        finally:
            for module, training in self._modes:
                module.train(training)
            for param, requires_grad, grad in self._params:
                param.requires_grad_(requires_grad)
                param.grad = grad
            self._stack.close()
        return False

    # ------------------------------------------------------------------------------------------------ the changes
    def apply(self, resets: list[TensorReset]) -> None:
        """Writes ``resets`` in place; a failure later in the transaction puts the old entries back."""
        undo = apply_resets(resets)
        self._undo.append(undo.rollback)

    def save_tensors(self, tensors: list[torch.Tensor]) -> None:
        """Saves whole tensors that a step is about to change in place by other means (e.g. BatchNorm statistics
        re-estimated by forward passes)."""
        undo = Undo()
        for tensor in tensors:
            undo.save(tensor, None)
        self._undo.append(undo.rollback)

    def swap_state(self, swaps: list[StateSwap]) -> None:
        """Sets ``state[key] = new`` for each swap (optimizer state); a later failure sets the old values back."""
        old = [(state, key, state.get(key, _MISSING)) for state, key, _ in swaps]

        def undo() -> None:
            for state, key, value in reversed(old):
                if value is _MISSING:
                    state.pop(key, None)
                else:
                    state[key] = value

        self._undo.append(undo)
        for state, key, new in swaps:
            state[key] = new

    def set_attribute(self, obj: Any, name: str, value: Any) -> None:
        """``setattr(obj, name, value)``; a later failure restores the old value (or removes the attribute)."""
        old = obj.__dict__.get(name, _MISSING) if hasattr(obj, "__dict__") else getattr(obj, name, _MISSING)

        def undo() -> None:
            if old is _MISSING:
                with contextlib.suppress(AttributeError):
                    delattr(obj, name)
            else:
                setattr(obj, name, old)

        self._undo.append(undo)
        setattr(obj, name, value)

    def on_failure(self, undo: Callable[[], None]) -> None:
        """Registers an undo step to run if the transaction fails (in reverse order of registration)."""
        self._undo.append(undo)

    def rollback(self) -> None:
        """Runs every undo step, newest first. Called by ``__exit__`` on failure."""
        while self._undo:
            self._undo.pop()()
