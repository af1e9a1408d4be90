"""The model under its wrappers: `torch.nn.DataParallel`, `DistributedDataParallel`, `torch.compile`'s
`OptimizedModule`, DeepSpeed's engine and the models Accelerate prepares hold the user's model (as ``.module`` or
``._orig_mod``); the init rule (``_init_weights``), the architecture rule and the record belong to the inner model.

A leaf of the core: [`hf_plasticity.core.architectures`] reads a layout through it, so it imports nothing of the
library.
"""

from __future__ import annotations

import itertools

from torch import nn


def unwrap_model(model: nn.Module) -> nn.Module:
    """The innermost model under DataParallel / DistributedDataParallel / ``torch.compile`` / Accelerate wrappers.

    Followed: ``_orig_mod`` (``torch.compile``), ``.module`` of `torch.nn.DataParallel` and
    `torch.nn.parallel.DistributedDataParallel`, and ``.module`` of any other module without a ``config`` whose
    parameters and buffers all lie in its ``.module`` (DeepSpeed's engine, Accelerate's wrappers). A model that is no
    wrapper is returned as it is: a user's model that keeps its trunk as ``self.module`` beside a head of its own is
    a model, not a wrapper.

    Raises:
        TypeError: when ``model`` is not a `torch.nn.Module`.

    Example:

    ```python
    >>> import torch
    >>> from torch import nn
    >>> from hf_plasticity.core.unwrap import unwrap_model
    >>> inner = nn.Linear(2, 2)
    >>> unwrap_model(nn.DataParallel(inner)) is inner
    True
    ```
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}.")
    for _ in range(16):  # wrappers nest a few levels at most
        inner = getattr(model, "_orig_mod", None)  # torch.compile
        if inner is None and isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            inner = model.module
        if inner is None and not hasattr(model, "config") and _holds_only_module(model):
            inner = model.module  # other engines that keep the model as `.module` (e.g. DeepSpeed)
        if not isinstance(inner, nn.Module):
            return model
        model = inner
    return model


def _holds_only_module(model: nn.Module) -> bool:
    """Whether ``model.module`` is a module that holds every parameter and buffer of ``model``: how an engine wraps a
    model it did not build (it adds no weights of its own, such as a head)."""
    if not isinstance(getattr(model, "module", None), nn.Module):
        return False
    names = itertools.chain(model.named_parameters(), model.named_buffers())
    return all(name.startswith("module.") for name, _ in names)
