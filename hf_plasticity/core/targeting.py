"""Resolves a config's scope (modules, depth, biases, norms) into the exact tensors a strategy may touch."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from .architectures import LINEAR_OR_CONV, ModelLayout, get_layout
from .config import PlasticityConfig
from .norms import is_norm as is_norm_layer


@dataclass
class Target:
    """One tensor in scope.

    Attributes:
        name: qualified name in the model (e.g. ``vit.layers.1.mlp.fc1.weight``).
        module_name: qualified name of the module that owns it.
        attr: attribute name on that module (``weight``, ``bias``, ``running_mean``, ...).
        tensor: the parameter or buffer object itself (writes go into it, in place).
        block: index of the backbone block that holds it, or None.
    """

    name: str
    module_name: str
    attr: str
    tensor: torch.Tensor
    block: int | None


class ScopeError(ValueError):
    """The requested scope matches no tensor of the model, or the model has no supported layers."""


def matches(name: str, patterns: list[str]) -> bool:
    """True when ``name`` equals a pattern, ends with ``"." + pattern``, or fully matches it as a regex."""
    for pattern in patterns:
        if name == pattern or name.endswith("." + pattern) or re.fullmatch(pattern, name):
            return True
    return False


def excluded(name: str, patterns: list[str] | None) -> bool:
    """Whether module ``name``, or a module that contains it, matches one of ``patterns``: excluding a block excludes
    everything inside it.

    Example:

    ```python
    >>> from hf_plasticity.core.targeting import excluded
    >>> excluded("vit.layers.1.mlp.fc1", ["vit.layers.1"]), excluded("vit.layers.10.mlp.fc1", ["vit.layers.1"])
    (True, False)
    ```
    """
    if not patterns:
        return False
    parts = name.split(".")
    return any(matches(".".join(parts[:end]), patterns) for end in range(1, len(parts) + 1))


def check_scope(model: nn.Module, config: PlasticityConfig, layout: ModelLayout) -> None:
    """Refuses a scope that names what the model lacks: a ``target_modules`` or ``exclude_modules`` entry that matches
    no module or parameter of the model (a typo, or a name from the checkpoint rather than the model in memory, which
    would otherwise target or exclude nothing, silently), and ``last_k_blocks`` above the model's number of blocks.

    Raises:
        ScopeError: naming the entry, and the in-memory name when the entry is a module's checkpoint name.
    """
    if config.last_k_blocks is not None and config.last_k_blocks > len(layout.blocks):
        raise ScopeError(
            f"`last_k_blocks`={config.last_k_blocks} but {type(model).__name__} has only {len(layout.blocks)} blocks."
        )
    names = [n for n, _ in model.named_modules() if n] + [n for n, _ in model.named_parameters()]
    for field in ("target_modules", "exclude_modules"):
        for pattern in getattr(config, field) or []:
            if not any(matches(name, [pattern]) for name in names):
                raise ScopeError(
                    f"`{field}` entry {pattern!r} matches no module of {type(model).__name__}"
                    f"{_in_memory_hint(model, pattern)}: give a module name as the model in memory names it (e.g. "
                    f"{(layout.blocks or names)[-1]!r}) or a regular expression that matches one."
                )


def _in_memory_hint(model: nn.Module, pattern: str) -> str:
    """``" (it is the checkpoint's name of module 'X')"`` when ``pattern`` is how the saved file names a module."""
    from .checkpoint_names import checkpoint_names, module_checkpoint_name

    saved = checkpoint_names(model)
    for name, _ in model.named_modules():
        if name and name != pattern and module_checkpoint_name(saved, name) == pattern:
            return f" (it is the checkpoint's name of module {name!r}, which the model in memory calls so)"
    return ""


def _in_scope_by_depth(layout: ModelLayout, module_name: str, last_k: int | None) -> bool:
    if last_k is None:
        return True
    block = layout.block_of(module_name)
    return block is not None and block >= len(layout.blocks) - last_k


def _module_filter(layout: ModelLayout, config: PlasticityConfig, name: str) -> bool:
    if not name or layout.in_head(name):
        return False
    if excluded(name, config.exclude_modules):
        return False
    return _in_scope_by_depth(layout, name, config.last_k_blocks)


def _modules_in_scope(
    model: nn.Module, config: PlasticityConfig, layout: ModelLayout
) -> Iterator[tuple[str, nn.Module, bool]]:
    """``(name, module, named in target_modules)`` for every module that the config's module filters let through."""
    check_scope(model, config, layout)
    for module_name, module in model.named_modules():
        if not _module_filter(layout, config, module_name):
            continue
        explicit = bool(config.target_modules) and matches(module_name, config.target_modules)
        if config.target_modules and not explicit:
            continue
        yield module_name, module, explicit


def frozen_tensors(module: nn.Module) -> set[str]:
    """Names (relative to ``module``) of what a strategy leaves alone unless the layer is named in
    ``target_modules``: every frozen parameter (``requires_grad=False``), and the buffers of every submodule whose own
    parameters are all frozen (the running statistics of a frozen BatchNorm belong to it).

    Example:

    ```python
    >>> from torch import nn
    >>> block = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    >>> _ = block[1].requires_grad_(False)
    >>> sorted(frozen_tensors(block))
    ['1.bias', '1.num_batches_tracked', '1.running_mean', '1.running_var', '1.weight']
    ```
    """
    frozen = set()
    for prefix, sub in module.named_modules():
        params = list(sub.named_parameters(recurse=False))
        dot = f"{prefix}." if prefix else ""
        frozen.update(dot + name for name, param in params if not param.requires_grad)
        if params and not any(param.requires_grad for _, param in params):
            frozen.update(dot + name for name, _ in sub.named_buffers(recurse=False))
    return frozen


def resolve_targets(model: nn.Module, config: PlasticityConfig, layout: ModelLayout | None = None) -> list[Target]:
    """The parameters in ``config``'s scope, in model order.

    Default scope: the weight of every Linear/Conv module of the backbone; biases with ``include_bias``; norm
    weights and biases with ``include_norm``. ``target_modules`` replaces the default module set (a frozen
    parameter is only targeted when named there). The head is never in scope.

    Raises:
        ScopeError: when nothing matches, or only frozen parameters do; the message says what was asked, what the
            model offers and how many parameters in scope are frozen.
    """
    layout = layout or get_layout(model)
    targets: list[Target] = []
    frozen = 0
    for module_name, module, explicit in _modules_in_scope(model, config, layout):
        is_norm = is_norm_layer(module)
        if is_norm and not config.include_norm and not explicit:
            continue
        if not is_norm and not isinstance(module, LINEAR_OR_CONV) and not explicit:
            continue
        attrs = ["weight", "bias"] if is_norm else ["weight"] + (["bias"] if config.include_bias else [])
        for attr in attrs:
            tensor = module._parameters.get(attr)
            if tensor is None:
                continue
            if not tensor.requires_grad and not explicit:
                frozen += 1
                continue
            targets.append(Target(f"{module_name}.{attr}", module_name, attr, tensor, layout.block_of(module_name)))
    if not targets:
        raise_empty_scope(model, config, layout, frozen=frozen)
    return targets


def resolve_every_tensor(
    model: nn.Module, config: PlasticityConfig, layout: ModelLayout | None = None
) -> list[Target]:
    """Every parameter, and every floating-point running statistic (BatchNorm), of every module in ``config``'s scope,
    whatever the module: Linear/Conv weights and biases, norms, embeddings (ViT's ``cls_token`` and
    ``position_embeddings``), layer scale, GRN. The scope is that of [`resolve_targets`] (``target_modules``,
    ``exclude_modules``, ``last_k_blocks``, frozen parameters, and the running statistics of a module whose parameters
    are all frozen, only when named); the head and the parameters of the
    root module itself are never in it.

    Raises:
        ScopeError: when nothing matches, or no trainable parameter does (only frozen ones, or buffers alone) and no
            layer is named in ``target_modules``.
    """
    layout = layout or get_layout(model)
    targets: list[Target] = []
    frozen = 0
    for module_name, module, explicit in _modules_in_scope(model, config, layout):
        skipped = set() if explicit else frozen_tensors(module)
        params = list(module.named_parameters(recurse=False))
        frozen += sum(a in skipped for a, _ in params)
        tensors = [(a, t) for a, t in params if a not in skipped]
        tensors += [
            (a, t)
            for a, t in module.named_buffers(recurse=False)
            if t.is_floating_point() and t.dim() >= 1 and a not in skipped
        ]
        block = layout.block_of(module_name)
        targets.extend(Target(f"{module_name}.{attr}", module_name, attr, tensor, block) for attr, tensor in tensors)
    if not targets or (not config.target_modules and not any(target.tensor.requires_grad for target in targets)):
        raise_empty_scope(model, config, layout, frozen=frozen)
    return targets


def resolve_block_modules(
    model: nn.Module, config: PlasticityConfig, num_blocks: int, *, require_trainable: bool = True
) -> list[str]:
    """Names of the last ``num_blocks`` blocks plus the final norm (if any), minus ``exclude_modules`` (what an
    excluded module inside a block holds is left out by the block's plan: see [`excluded`]).

    Raises:
        ScopeError: when the model has no blocks, ``num_blocks`` exceeds them, ``exclude_modules`` leaves nothing,
            or (with ``require_trainable``) every parameter left in those modules is frozen: a whole-block re-draw
            skips frozen parameters, so it would re-draw nothing.
    """
    layout = get_layout(model)
    if not layout.blocks:
        raise ScopeError(f"{type(model).__name__} has no supported layers: no Linear/Conv block was found.")
    check_scope(model, config, layout)
    if num_blocks > len(layout.blocks):
        raise ScopeError(f"`num_blocks`={num_blocks} but {type(model).__name__} has only {len(layout.blocks)} blocks.")
    names = layout.blocks[len(layout.blocks) - num_blocks :]
    if layout.final_norm:
        names.append(layout.final_norm)
    names = [n for n in names if not excluded(n, config.exclude_modules)]
    if not names:
        raise_empty_scope(model, config, layout)
    if require_trainable:
        params = [
            param
            for name in names
            for param_name, param in model.get_submodule(name).named_parameters()
            if not excluded(f"{name}.{param_name}".rsplit(".", 1)[0], config.exclude_modules)
        ]
        if not any(param.requires_grad for param in params):
            raise_empty_scope(model, config, layout, frozen=len(params), blocks=names)
    return names


def raise_empty_scope(
    model: nn.Module,
    config: PlasticityConfig,
    layout: ModelLayout,
    *,
    frozen: int = 0,
    blocks: list[str] | None = None,
) -> None:
    """Raises the [`ScopeError`] of a scope with nothing to write: what the config asked, what the model offers and,
    when ``frozen`` parameters in scope were left out for being frozen, how many and what to do.

    Args:
        frozen: how many parameters in scope are frozen (``requires_grad=False``).
        blocks: the modules of a whole-block re-draw, when that is the scope.
    """
    if not any(isinstance(m, LINEAR_OR_CONV) for m in model.modules()):
        raise ScopeError(f"{type(model).__name__} has no supported layers (no Linear or Conv module).")
    fields = ("target_modules", "exclude_modules", "last_k_blocks")
    asked = [f"{name}={getattr(config, name)}" for name in fields if name not in config.unused_scope_fields]
    if blocks is not None:
        asked.insert(0, f"modules {blocks}")
    raise ScopeError(
        f"The scope matches no {'trainable ' if frozen else ''}tensor of {type(model).__name__}: {', '.join(asked)}. "
        f"The backbone has {len(layout.blocks)} blocks (first: {layout.blocks[:1]}, last: {layout.blocks[-1:]}); "
        f"the head {layout.head} is never targeted.{frozen_hint(config, frozen)}"
    )


def frozen_hint(config: PlasticityConfig, frozen: int) -> str:
    """The sentence of a scope error that counts the ``frozen`` parameters in scope (the scope holds no trainable one)
    and says what to do; empty when none is frozen."""
    if not frozen:
        return ""
    if "target_modules" in config.unused_scope_fields:  # whole blocks: the block count and exclusions choose them
        other = "or re-draw other blocks (a larger `num_blocks`, with the frozen ones in `exclude_modules`)"
    else:
        other = (
            "name other modules (`target_modules`, `exclude_modules`, `last_k_blocks`), or name the frozen layers in "
            "`target_modules` to write them anyway"
        )
    counted = f"All {frozen} parameters in scope are" if frozen > 1 else "The one parameter in scope is"
    return (
        f" {counted} frozen "
        "(requires_grad=False), and a restore leaves frozen parameters as they are: unfreeze them "
        f"(`requires_grad_(True)`) before the restore, {other}."
    )
