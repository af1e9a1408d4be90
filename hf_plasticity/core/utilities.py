"""Per-weight utility scores: how useful each weight is to the downstream task (low utility = re-draw it).

- ``grad_x_weight``: U = |w * g|, with g the mean downstream gradient over the calibration batches;
- ``grad``: U = |g|;
- ``magnitude``: U = |w| (data-free);
- ``random``: U ~ uniform (the control arm).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .data import downstream_loss, iter_batches
from .init import derive_seed
from .targeting import Target

UTILITIES = ("grad_x_weight", "grad", "magnitude", "random")
DATA_UTILITIES = ("grad_x_weight", "grad")


@contextmanager
def calibration_mode(model: nn.Module, targets: list[Target]) -> Iterator[None]:
    """Eval mode (no dropout, no BatchNorm statistics update), gradients enabled on the targets only, and the
    model's ``training`` flags, ``requires_grad`` flags, existing ``.grad`` tensors and the RNG state restored on exit.
    """
    training = {m: m.training for m in model.modules()}
    params = list(model.parameters())
    requires_grad = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    target_ids = {id(t.tensor) for t in targets}
    try:
        with torch.random.fork_rng(devices=[]):
            model.eval()
            for p in params:
                p.requires_grad_(id(p) in target_ids)
                p.grad = None
            yield
    finally:
        for p, flag, grad in zip(params, requires_grad, grads):
            p.requires_grad_(flag)
            p.grad = grad
        for module, flag in training.items():
            module.train(flag)


def mean_gradients(
    model: nn.Module, targets: list[Target], data: Any, num_batches: int, batch_size: int
) -> dict[str, torch.Tensor]:
    """Mean gradient of the downstream loss over ``num_batches`` batches, per target (no optimizer step).

    Gradients accumulate in the targets' own ``.grad`` (one gradient-sized buffer, as in training); the model's
    previous ``.grad`` tensors are put back afterwards and the accumulated ones are handed over, as float32.
    """
    count = 0
    with calibration_mode(model, targets):
        for batch in iter_batches(data, num_batches, batch_size):
            downstream_loss(model, batch).backward()
            count += 1
        sums = {t.name: t.tensor.grad for t in targets}
    means = {}
    for target in targets:
        grad = sums.pop(target.name)
        if grad is None:
            means[target.name] = torch.zeros_like(target.tensor, dtype=torch.float32)
        else:
            means[target.name] = grad.float().div_(count)
    return means


def compute_utilities(
    model: nn.Module,
    targets: list[Target],
    utility: str,
    *,
    data: Any = None,
    num_batches: int = 8,
    batch_size: int = 32,
    seed: int = 0,
) -> Iterator[tuple[Target, torch.Tensor]]:
    """Yields ``(target, utility)`` pairs, one float32 utility tensor (same shape as the weight) per target.

    Utilities are produced one tensor at a time, so a data-free utility never holds more than one extra tensor.
    """
    if utility not in UTILITIES:
        raise ValueError(f"Unknown utility {utility!r}. Accepted utilities: {', '.join(UTILITIES)}.")
    grads = mean_gradients(model, targets, data, num_batches, batch_size) if utility in DATA_UTILITIES else {}
    for target in targets:
        weight = target.tensor.detach().float()
        if utility == "grad_x_weight":
            yield target, (weight * grads.pop(target.name)).abs()
        elif utility == "grad":
            yield target, grads.pop(target.name).abs()
        elif utility == "magnitude":
            yield target, weight.abs()
        else:
            generator = torch.Generator(device="cpu").manual_seed(derive_seed(seed, "utility", target.name))
            yield target, torch.rand(weight.shape, generator=generator).to(weight.device)
