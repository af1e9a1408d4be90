"""The model a restore acts on: the one that owns ``config``, whatever wraps it, and the one check of the model object
that every entry point runs before anything changes ([`check_restorable`]); with the plan at hand, the check that it
writes no tensor tied to a module it does not change ([`check_writes_not_tied`]).

`torch.nn.DataParallel`, `DistributedDataParallel`, `torch.compile`'s `OptimizedModule` and the models Accelerate
prepares wrap the user's model; the init rule (``_init_weights``), the architecture rule and the record belong to the
inner model ([`unwrap_model`], from [`hf_plasticity.core.wrappers`]). A model whose tensors are on the ``meta`` device
holds no values to restore and is refused.
"""

from __future__ import annotations

import torch
from torch import nn

from .architectures import get_layout
from .collectives import check_not_sharded
from .plan import TensorReset
from .wrappers import unwrap_model as unwrap_model  # re-exported: the entry points import it from here


class MetaDeviceError(ValueError):
    """The model's parameters are on the ``meta`` device: there are no weights to restore yet."""


def check_restorable(model: nn.Module, *, writes: bool = True) -> None:
    """Raises a clear error, naming the problem and the tensor, for a model that cannot be restored (or, with
    ``writes=False``, diagnosed) as it is. [`prepare_pretrained`], [`diagnose`], the pipeline's every restore (one-shot
    and periodic) and [`PlasticityController`] run it before anything changes.

    Checks, in order: ``model`` is a `torch.nn.Module` with parameters; none is on the ``meta`` device
    ([`MetaDeviceError`]) or sharded across processes ([`ShardedModelError`]); every floating parameter is finite
    (a NaN or infinite weight would be carried into every score and every kept weight); with ``writes``, no tensor of
    the classification head shares its storage with a backbone tensor (the same Parameter registered twice, or two
    Parameters over one storage: a write to the backbone tensor would change the head, which is never targeted).

    Frozen parameters (``requires_grad=False``) are not refused: every strategy skips them (and the running statistics
    of a module whose parameters are all frozen, and a unit whose outgoing weights are frozen), unless a layer is
    named in ``target_modules``; a scope left without a trainable parameter is refused by the strategy's scope
    ([`ScopeError`], counting the frozen ones).

    Args:
        model: the unwrapped model ([`unwrap_model`]).
        writes: also check what only matters when the model is written (the head's tied tensors).

    Raises:
        TypeError: when ``model`` is not a `torch.nn.Module`.
        ValueError: for a model without parameters, with non-finite parameters, or with a tied head (a
            [`MetaDeviceError`] / [`ShardedModelError`] for meta or sharded tensors).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}.")
    parameters = list(model.named_parameters())
    if not parameters:
        raise ValueError(
            f"`model` ({type(model).__name__}) has no parameters: there is nothing to restore or diagnose. Pass the "
            "image classifier itself (e.g. `AutoModelForImageClassification.from_pretrained(...)`)."
        )
    meta = [n for n, t in parameters + list(model.named_buffers()) if t.is_meta]
    if meta:
        raise MetaDeviceError(
            f"{len(meta)} tensors of {type(model).__name__} are on the meta device (e.g. {meta[0]!r}): they hold no "
            "values to restore. Load the weights first (e.g. `from_pretrained(...)` without a meta `device_map`), "
            "then restore."
        )
    check_not_sharded(model)
    _check_finite(parameters)
    if writes:
        _check_head_not_tied(model)


def _check_finite(parameters: list[tuple[str, torch.Tensor]]) -> None:
    for name, tensor in parameters:
        if tensor.is_floating_point() or tensor.is_complex():
            bad = int((~torch.isfinite(tensor.detach())).sum())
            if bad:
                raise ValueError(
                    f"`model` holds {bad} NaN or infinite values in parameter {name!r} (of {tensor.numel()}): a "
                    "restore or a diagnosis would carry them into every score and every kept weight. Load the weights "
                    "again, or find what made them non-finite (e.g. a diverged training run), first."
                )


def _storage(tensor: torch.Tensor) -> tuple[torch.device, int] | None:
    if tensor.numel() == 0:
        return None
    return tensor.device, tensor.untyped_storage().data_ptr()


def _check_head_not_tied(model: nn.Module) -> None:
    """Raises a `ValueError` naming a head tensor and the backbone tensor whose storage it shares."""
    layout = get_layout(model)
    if not layout.head:
        return
    tensors = _all_named_tensors(model)
    backbone: dict[tuple[torch.device, int], str] = {}
    for name, tensor in tensors:
        key = _storage(tensor)
        if key is not None and not layout.in_head(name.rsplit(".", 1)[0]):
            backbone.setdefault(key, name)
    for name, tensor in tensors:
        key = _storage(tensor)
        if key is not None and layout.in_head(name.rsplit(".", 1)[0]) and key in backbone:
            raise ValueError(
                f"The head tensor {name!r} shares its storage with {backbone[key]!r} of the backbone (tied weights): "
                f"a restore that writes {backbone[key]!r} would change the head {layout.head}, which is never "
                "targeted. Untie them first (e.g. `model.classifier.weight = nn.Parameter(weight.detach().clone())`)."
            )


def _all_named_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Every parameter and buffer under every name it has (a tied tensor once per module holding it)."""
    return list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers(remove_duplicate=False))


def check_writes_not_tied(model: nn.Module, resets: list[TensorReset]) -> None:
    """Raises a `ValueError` naming both modules when a planned write goes into a tensor that ``model`` also holds
    under a module outside what the plan changes (tied weights: one Parameter registered in two modules), before
    anything is written: the write would change that module too, and the report would not name it.

    Another name of a written tensor is within the plan when the plan writes under that name too (shrink & perturb
    over both modules), or when it lies in the same backbone block as the write (a block changed whole).
    """
    names: dict[int, list[str]] = {}
    for name, tensor in _all_named_tensors(model):
        names.setdefault(id(tensor), []).append(name)
    written = {reset.name for reset in resets}
    for reset in resets:
        others = [name for name in names.get(id(reset.tensor), []) if name not in written]
        if not others:
            continue
        layout = get_layout(model)
        for other in others:
            module, _, attr = other.rpartition(".")
            if reset.block is not None and layout.block_of(module) == reset.block:
                continue
            owner = f"model.get_submodule({module!r}).{attr}"
            raise ValueError(
                f"The restore would write {reset.name!r}, which is the same tensor as {other!r} (tied weights): the "
                f"write would also change module {module!r}, which this restore does not change, and the report "
                f"would not name it. Untie them first (e.g. `{owner} = nn.Parameter({owner}.detach().clone())`); "
                "nothing was changed."
            )
