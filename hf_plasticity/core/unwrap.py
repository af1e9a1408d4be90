"""The model a restore acts on: the one that owns ``config``, whatever wraps it.

`torch.nn.DataParallel`, `DistributedDataParallel`, `torch.compile`'s `OptimizedModule` and the models Accelerate
prepares wrap the user's model; the init rule (``_init_weights``), the architecture rule and the record belong to the
inner model. A model whose tensors are on the ``meta`` device holds no values to restore and is refused.
"""

from __future__ import annotations

from torch import nn

from .collectives import check_not_sharded


class MetaDeviceError(ValueError):
    """The model's parameters are on the ``meta`` device: there are no weights to restore yet."""


def unwrap_model(model: nn.Module) -> nn.Module:
    """The innermost model under DataParallel / DistributedDataParallel / ``torch.compile`` / Accelerate wrappers.

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
        if inner is None and not hasattr(model, "config") and isinstance(getattr(model, "module", None), nn.Module):
            inner = model.module  # other engines that keep the model as `.module` (e.g. DeepSpeed)
        if not isinstance(inner, nn.Module):
            return model
        model = inner
    return model


def check_restorable(model: nn.Module) -> None:
    """Raises a clear error for a model whose weights cannot be restored in place: on the ``meta`` device, or sharded
    across processes ([`ShardedModelError`])."""
    meta = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if meta:
        raise MetaDeviceError(
            f"{len(meta)} tensors of {type(model).__name__} are on the meta device (e.g. {meta[0]!r}): they hold no "
            "values to restore. Load the weights first (e.g. `from_pretrained(...)` without a meta `device_map`), "
            "then restore."
        )
    check_not_sharded(model)
