"""Optimizer-state reset for re-drawn entries: without it, stale Adam moments push fresh weights straight back.

The reset is computed out of place ([`fresh_state`] builds the new state and leaves the optimizer as it is): the
restore pipeline computes it before it writes anything (state it cannot reset is refused there), then swaps it in as
part of its transaction, so a failure anywhere puts the old state back.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch

from .flat_index import write_entries

#: ``(state, key, new)``: setting ``state[key] = new`` applies one part of a reset.
StateSwap = tuple[dict, Any, Any]


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The raw torch optimizer behind Accelerate's (or Trainer's) wrapper. Accelerate's ``AcceleratedOptimizer`` is
    itself a `torch.optim.Optimizer` subclass, so a wrapper is followed whenever its ``.optimizer`` is one: stopping
    at the wrapper would rebuild ``AcceleratedOptimizer`` as the stand-in of [`fresh_state`], which fails."""
    while True:
        inner = getattr(optimizer, "optimizer", None)
        if inner is None or (
            isinstance(optimizer, torch.optim.Optimizer) and not isinstance(inner, torch.optim.Optimizer)
        ):
            break
        optimizer = inner
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
def fresh_state(
    optimizer: Any,
    resets: Iterable[tuple[torch.Tensor, torch.Tensor | None]],
    names: Mapping[int, str] | None = None,
) -> list[StateSwap]:
    """The optimizer state of the written entries, reset; the optimizer itself is not modified.

    - A parameter written whole gets an empty state: at its next step the optimizer creates the state of a parameter
      it has not trained yet (zero moments and step count, Adafactor's factored moments, NAdam's ``mu_product`` of
      1, ...), as every torch optimizer, transformers' ``Adafactor`` and bitsandbytes' optimizers do.
    - A parameter written in part keeps its state but for the written entries: in every state tensor of the
      parameter's shape they get the value a new optimizer starts an entry at. That is zero for most (Adam/AdamW
      ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``, SGD ``momentum_buffer``, ...), but not for all: Rprop's
      ``step_size`` starts at ``lr`` (at zero the entries would never move again) and Adagrad's ``sum`` at
      ``initial_accumulator_value``. The values are read from a stand-in: a new optimizer of the same class, with the
      parameter's group hyperparameters, over a one-entry zero tensor, after one step with a zero
      gradient. That step keeps the state torch's optimizers create, or moves it where their first real step would
      undo the difference (Adamax's ``exp_inf`` of ``eps``; Rprop's ``step_size`` clamped to ``step_sizes``). Where
      the stand-in cannot be built or stepped (a third-party constructor that needs arguments ``optimizer.defaults``
      does not hold, a step that needs a closure or sparse gradients), the entries are zeroed. Scalars shared by all
      of the parameter's entries (Adam's ``step``, NAdam's ``mu_product``) are kept.

    Args:
        optimizer: a torch optimizer or a wrapper with an ``.optimizer`` attribute.
        resets: ``(parameter, flat_index)`` pairs; ``flat_index=None`` means the whole parameter.
        names: ``id(parameter) -> name``, for the error message (e.g. from ``model.named_parameters()``).

    Returns:
        ``(state, key, new)`` triples: setting ``state[key] = new`` for each applies the reset (for a parameter
        written whole, ``state`` is the optimizer's ``state`` and ``key`` the parameter).

    Raises:
        ValueError: when a parameter written in part has state that cannot be split into its entries: neither of the
            parameter's shape nor a scalar, such as Adafactor's factored second moments (``row_var``/``col_var``,
            ``exp_avg_sq_row``/``exp_avg_sq_col``). Nothing is changed then; the message names the parameter and the
            state.

    Example:

    ```python
    >>> import torch
    >>> weight = torch.nn.Parameter(torch.ones(3))
    >>> optimizer = torch.optim.SGD([weight], lr=0.1, momentum=0.9)
    >>> weight.grad = torch.ones(3); optimizer.step()
    >>> [(key, new.tolist()) for _, key, new in fresh_state(optimizer, [(weight, torch.tensor([1]))])]
    [('momentum_buffer', [1.0, 0.0, 1.0])]
    >>> [(key is weight, new) for _, key, new in fresh_state(optimizer, [(weight, None)])]
    [(True, {})]
    >>> adagrad = torch.optim.Adagrad([weight], lr=0.1, initial_accumulator_value=0.5)
    >>> weight.grad = torch.full((3,), 2.0); adagrad.step()
    >>> [(key, new.tolist()) for _, key, new in fresh_state(adagrad, [(weight, torch.tensor([1]))])]
    [('sum', [4.5, 0.5, 4.5])]
    ```
    """
    optimizer = unwrap_optimizer(optimizer)
    swaps: list[StateSwap] = []
    for param, index in _entries_by_parameter(resets).values():
        state = optimizer.state.get(param)
        if not state:
            continue
        if index is None:
            swaps.append((optimizer.state, param, {}))
            continue
        split = {key: value for key, value in state.items() if torch.is_tensor(value) and value.shape == param.shape}
        for key, value in state.items():
            if key not in split and not _is_scalar(value):
                name = (names or {}).get(id(param), f"of shape {tuple(param.shape)}")
                raise _unsplittable(name, key, value)
        starts = _fresh_entry_values(optimizer, param) if split else {}
        for key, value in split.items():
            start = starts.get(key)
            ok = torch.is_tensor(start) and start.numel() == 1
            new = value.detach().clone()  # keeps the old state's memory format
            write_entries(new, index, (start.reshape(1) if ok else torch.zeros(1)).expand(index.numel()))
            swaps.append((state, key, new))
    return swaps


def _fresh_entry_values(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> dict[Any, Any]:
    """The state a new optimizer of ``optimizer``'s class and ``param``'s group hyperparameters holds for a one-entry
    zero tensor of ``param``'s dtype, device and number of dimensions after one step with a zero gradient (a new
    optimizer starts every entry of a state tensor at one value, so one entry tells it, at no cost on large
    parameters); empty, with a warning naming the optimizer's class, when that stand-in cannot be built or stepped
    (the caller zeroes the entries then). The stand-in's step runs without torch's global optimizer step hooks: it
    is no step of the user's training, so their hooks neither see it nor can fail it."""
    group = next((g for g in optimizer.param_groups if any(p is param for p in g["params"])), None)
    if group is None:
        return {}
    stand_in = param.new_zeros((1,) * param.dim())  # a plain tensor: no autograd, whatever ``differentiable`` says
    try:
        cls = type(optimizer)
        # Constructor arguments from ``defaults``: some constructors need them, and some read them, not the group
        # (Adagrad's ``initial_accumulator_value``); the group's own keys (``initial_lr``, ...) override them.
        accepted = inspect.signature(cls).parameters
        kwargs = {k: v for k, v in optimizer.defaults.items() if k in accepted and k != "params"}
        hyper = copy.deepcopy({k: v for k, v in group.items() if k != "params"})
        twin = cls([{**hyper, "params": [stand_in]}], **kwargs)
        stand_in.grad = torch.zeros_like(stand_in)
        with _without_global_step_hooks():
            twin.step()
    except Exception as error:  # a third-party optimizer that cannot be rebuilt so: its entries are zeroed
        warnings.warn(
            f"Cannot tell the start values of a new {cls.__name__}'s state ({type(error).__name__}: {error}): the "
            "re-drawn entries' optimizer state is set to zeros, which is not how a new optimizer starts for every "
            "state (Rprop's step sizes, Adagrad's initial accumulator): those entries may train differently.",
            stacklevel=2,
        )
        return {}
    return dict(twin.state.get(stand_in, {}))


@contextlib.contextmanager
def _without_global_step_hooks() -> Iterator[None]:
    """Within it, torch's global optimizer step hooks (``register_optimizer_step_pre_hook`` / ``..._post_hook``) are
    set aside, and put back on exit whatever happens: the stand-in step of [`_fresh_entry_values`] is no step of the
    user's training, yet a user's hook would count it, and a hook that refuses an optimizer it does not know would
    make the stand-in fail (its entries zeroed: Rprop's step sizes at 0, never to move again). The registries are
    emptied and refilled in place, so the handles that remove those hooks keep working. A torch without these
    registries is left as it is."""
    from torch.optim import optimizer as module

    registries = [
        getattr(module, name, None) for name in ("_global_optimizer_pre_hooks", "_global_optimizer_post_hooks")
    ]
    saved = [(hooks, dict(hooks)) for hooks in registries if isinstance(hooks, dict)]
    try:
        for hooks, _ in saved:
            hooks.clear()
        yield
    finally:
        for hooks, kept in saved:
            hooks.clear()
            hooks.update(kept)


def _is_scalar(value: Any) -> bool:
    """Whether a state value is one number (a step count, a schedule's product), shared by all entries."""
    return value is None or isinstance(value, (int, float)) or (torch.is_tensor(value) and value.numel() == 1)


def _unsplittable(name: str, key: Any, value: Any) -> ValueError:
    what = f"a tensor of shape {tuple(value.shape)}" if torch.is_tensor(value) else f"a {type(value).__name__}"
    return ValueError(
        f"Cannot reset the optimizer state of the re-drawn entries of parameter {name}: its state {key!r} is {what}, "
        "which cannot be split into the parameter's entries (factored second moments, such as Adafactor's, mix the "
        "entries of whole rows and columns). A parameter re-drawn in part supports state of its own shape (Adam, "
        "AdamW, SGD, RMSprop, ...) and scalars such as the step count; a parameter re-drawn whole supports any state. "
        "Use a whole-block strategy (`LayerReinitConfig`, `AutoReinitConfig`) with this optimizer, an optimizer with "
        "per-entry state, or no optimizer."
    )
