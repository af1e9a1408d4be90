"""Which parameters a restore re-drew, named compactly, and back from those names to the parameters.

A re-drawn parameter starts again from the init distribution: for the optimizer it is new, like the classification
head. The record ([`PlasticityReport.redrawn`], saved in ``config.json``) lists them as ``{"whole": [...], "partial":
[...]}``: a *whole* name is a module whose parameters were all replaced by fresh draws (``"vit.layers.11"``), or a
single parameter replaced whole; a *partial* name is a parameter of which only some entries were re-drawn (selective,
unit resets). Only fresh draws count: edits that keep part of the old values (shrink & perturb, DASH) are not re-draws.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .plan import TensorReset


def describe_redrawn(model: nn.Module, resets: list[TensorReset]) -> dict[str, list[str]]:
    """The compact names of the parameters that ``resets`` replace by fresh draws (empty lists when none).

    Example:

    ```python
    >>> import torch
    >>> from torch import nn
    >>> from hf_plasticity.core.plan import TensorReset
    >>> from hf_plasticity.core.redrawn import describe_redrawn
    >>> model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    >>> resets = [TensorReset("1.weight", model[1].weight, torch.zeros(2, 2)),
    ...           TensorReset("1.bias", model[1].bias, torch.zeros(2)),
    ...           TensorReset("0.weight", model[0].weight, torch.zeros(1), index=torch.tensor([0]))]
    >>> describe_redrawn(model, resets)
    {'whole': ['1'], 'partial': ['0.weight']}
    ```
    """
    names = {id(p): n for n, p in model.named_parameters()}
    whole: set[str] = set()
    partial: set[str] = set()
    for reset in resets:
        name = names.get(id(reset.tensor))
        if name is None or not reset.fresh:
            continue
        if reset.index is None or reset.count >= reset.tensor.numel():
            whole.add(name)
        else:
            partial.add(name)
    partial -= whole
    return {"whole": _compact(model, whole), "partial": sorted(partial, key=list(names.values()).index)}


def _compact(model: nn.Module, whole: set[str]) -> list[str]:
    """The highest modules whose parameters are all in ``whole``, then the parameters no such module covers."""
    names: list[str] = []
    covered: set[str] = set()
    for module_name, module in model.named_modules():
        params = [f"{module_name}.{n}" if module_name else n for n, _ in module.named_parameters()]
        if not module_name or not params or any(p in covered for p in params):
            continue
        if all(p in whole for p in params):
            names.append(module_name)
            covered.update(params)
    names.extend(n for n, _ in model.named_parameters() if n in whole and n not in covered)
    return names


def redrawn_parameters(model: nn.Module, redrawn: dict[str, Any] | None) -> tuple[set[str], set[str]]:
    """The parameter names that ``redrawn`` (a record's or a report's ``redrawn`` entry) designates in ``model``:
    ``(whole, partial)``.

    Raises:
        ValueError: when a name matches no module or parameter of ``model`` (the record belongs to another model).
    """
    redrawn = redrawn or {}
    modules = dict(model.named_modules())
    params = [n for n, _ in model.named_parameters()]
    whole: set[str] = set()
    for name in redrawn.get("whole", []):
        if name in modules and name:
            whole.update(p for p in params if p.startswith(name + "."))
        elif name in params:
            whole.add(name)
        else:
            raise ValueError(
                f"The plasticity record names {name!r} as re-drawn, but {type(model).__name__} has no such module or "
                "parameter: the record belongs to another model."
            )
    partial = set(redrawn.get("partial", []))
    unknown = sorted(partial - set(params))
    if unknown:
        raise ValueError(
            f"The plasticity record names {unknown[0]!r} as partly re-drawn, but {type(model).__name__} has no such "
            "parameter: the record belongs to another model."
        )
    return whole, partial
