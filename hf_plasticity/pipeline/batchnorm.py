"""Re-estimating the running statistics of re-initialized BatchNorm layers from calibration data.

A restore that re-draws a BatchNorm layer resets its running statistics to mean 0 / variance 1. Training-mode
forward passes ignore them, but evaluation uses them, and with a small momentum they lag the weights for hundreds of
steps: a restored CNN then evaluates near chance in its first epochs. A "precise BN" pass over a few downstream
batches (cumulative average, no parameter change) gives them their real values right away.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core.data import OVERFLOW_ADVICE, CalibrationDataError, iter_batches, model_device_dtype
from ..core.norms import is_batchnorm
from ..core.plan import TensorReset


def reset_batchnorm_modules(model: nn.Module, plan: list[TensorReset]) -> list[str]:
    """Names of the BatchNorm modules whose running statistics ``plan`` overwrites whole."""
    names = {r.name.rsplit(".", 1)[0] for r in plan if r.index is None and r.name.endswith(".running_mean")}
    return [n for n, m in model.named_modules() if n in names and is_batchnorm(m)]


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module,
    data: Any,
    module_names: list[str],
    *,
    num_batches: int = 8,
    batch_size: int = 32,
    require_labels: bool = False,
) -> int:
    """Re-estimates the running statistics of the named BatchNorm modules from ``data``.

    The named modules run in train mode with ``momentum=None`` (a cumulative average over the batches) while every
    other module stays in eval mode, so nothing else changes; modes, momenta and the RNG state are restored.

    Args:
        model: the model.
        data: calibration data, as for [`prepare_pretrained`].
        module_names: the BatchNorm modules to re-estimate.
        num_batches: batches to average over.
        batch_size: rows per batch when ``data`` is a `datasets.Dataset`.
        require_labels: whether batches without labels are refused (labels are not used here, so by default
            they are not required).

    Returns:
        The number of batches used.

    Example:

    ```python
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    >>> data = [(torch.randn(8, 3, 6, 6) + 5.0, torch.zeros(8, dtype=torch.long))]
    >>> recalibrate_batchnorm(model, data, ["1"], num_batches=1)
    1
    >>> bool(model[1].running_mean.abs().sum() > 0)
    True
    ```
    """
    modules = {name: module for name, module in model.named_modules() if name in set(module_names)}
    training = {m: m.training for m in model.modules()}
    momenta = {name: module.momentum for name, module in modules.items()}
    device, dtype = model_device_dtype(model)
    count = 0
    try:
        with torch.random.fork_rng(devices=[]):
            model.eval()
            for module in modules.values():
                module.reset_running_stats()
                module.momentum = None
                module.train()
            for pixel_values, _ in iter_batches(data, num_batches, batch_size, require_labels=require_labels):
                model(pixel_values.to(device=device, dtype=dtype))
                count += 1
    finally:
        for name, module in modules.items():
            module.momentum = momenta[name]
        for module, flag in training.items():
            module.train(flag)
    return count


def check_finite_statistics(model: nn.Module, module_names: list[str]) -> None:
    """Raises a [`CalibrationDataError`] naming the first of the named BatchNorm modules whose re-estimated running
    statistics hold NaN or infinite values: the model overflowed on the calibration data (unnormalized pixels, or
    half precision), and such statistics would make every evaluation of the layer's output NaN or meaningless.

    The restore pipeline checks inside its transaction, so the error undoes the whole restore.
    """
    for name in module_names:
        for buffer_name, buffer in model.get_submodule(name).named_buffers(recurse=False):
            if not buffer.is_floating_point():
                continue
            bad = int((~torch.isfinite(buffer)).sum())
            if bad:
                raise CalibrationDataError(
                    f"Re-estimating the running statistics of the re-drawn BatchNorm layer {name!r} on the "
                    f"calibration data gave {bad} NaN or infinite values in `{buffer_name}` (of {buffer.numel()}, "
                    f"{buffer.dtype}): the model overflows on these inputs. {OVERFLOW_ADVICE} Or pass "
                    "`recalibrate_batchnorm=False` to keep the reset statistics (mean 0, variance 1); nothing was "
                    "changed."
                )
