"""Fresh values drawn with the model's own init rule, deterministic and without touching the model.

transformers 5.x marks every loaded tensor with ``_is_hf_initialized`` and its init functions skip marked tensors,
so ``model._init_weights(module)`` on a loaded model silently does nothing. Fresh values are therefore drawn on a
*copy of one module* whose flags are cleared: the model itself is never written here, and never copied whole.
"""

from __future__ import annotations

import copy
import zlib
from contextlib import contextmanager

import torch
from torch import nn

_FLAG = "_is_hf_initialized"


def derive_seed(seed: int, *names: str) -> int:
    """A seed for one named draw: stable across processes and Python runs (no ``hash()`` randomization)."""
    return (seed * 1_000_003 + zlib.crc32("/".join(names).encode())) % (2**63 - 1)


@contextmanager
def seeded(seed: int, device: torch.device | None = None):
    """Runs the block under ``torch.manual_seed(seed)`` and restores the global RNG state afterwards."""
    devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _clear_init_flags(module: nn.Module) -> None:
    for sub in module.modules():
        if getattr(sub, _FLAG, False):
            setattr(sub, _FLAG, False)
        for tensor in list(sub.parameters(recurse=False)) + list(sub.buffers(recurse=False)):
            if hasattr(tensor, _FLAG):
                delattr(tensor, _FLAG)


def _init_rule(model: nn.Module):
    """The per-module init function of ``model``: transformers' ``_init_weights``, else ``reset_parameters``."""
    hf_init = getattr(model, "_init_weights", None)
    if callable(hf_init) and hasattr(model, "config"):
        return hf_init

    def reset(module: nn.Module) -> None:
        if hasattr(module, "reset_parameters") and callable(module.reset_parameters):
            module.reset_parameters()
        if hasattr(module, "reset_running_stats") and callable(module.reset_running_stats):
            module.reset_running_stats()

    return reset


@torch.no_grad()
def fresh_module(model: nn.Module, module: nn.Module, *, seed: int) -> nn.Module:
    """A re-initialized copy of ``module`` (one submodule of ``model``), drawn with ``model``'s init rule.

    Every module inside the copy is initialized (``_init_weights`` does not recurse), so layer scale, GRN and
    BatchNorm running statistics come out as at construction. Dtype and device are those of ``module``; the memory
    format is always the contiguous one, so a channels-last model draws the values its contiguous twin draws (an init
    function fills a tensor in memory order).

    Args:
        model: the whole model, whose ``_init_weights`` (transformers) or modules' ``reset_parameters`` is the rule.
        module: the submodule to draw for. It is not modified.
        seed: seed of the draw; the same seed gives the same values.
    """
    clone = copy.deepcopy(module).to(memory_format=torch.contiguous_format)
    _clear_init_flags(clone)
    rule = _init_rule(model)
    first = next(iter(list(clone.parameters()) + list(clone.buffers())), None)
    device = first.device if first is not None else None
    with seeded(seed, device):
        for sub in clone.modules():
            rule(sub)
    return clone


def fresh_tensors(model: nn.Module, module: nn.Module, *, seed: int) -> dict[str, torch.Tensor]:
    """Fresh values of ``module``'s parameters and buffers, keyed by their names relative to ``module``."""
    clone = fresh_module(model, module, seed=seed)
    fresh = dict(clone.named_parameters())
    fresh.update(dict(clone.named_buffers()))
    return {name: tensor.detach() for name, tensor in fresh.items()}
