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


REDRAWN_KEYS = ("whole", "partial")


def check_redrawn(redrawn: Any, name: str = "redrawn") -> dict[str, list[str]]:
    """``redrawn`` as ``{"whole": [...], "partial": [...]}`` (both keys present), or a `ValueError` naming ``name`` and
    the accepted form: an unknown key (a typo such as ``"wholes"``) or a value that is not a list of names is refused,
    never ignored.

    Example:

    ```python
    >>> from hf_plasticity.core.redrawn import check_redrawn
    >>> check_redrawn({"whole": ["vit.layers.11"]})
    {'whole': ['vit.layers.11'], 'partial': []}
    ```
    """
    if not isinstance(redrawn, dict):
        raise ValueError(
            f"`{name}` must be a dict such as {{'whole': ['vit.layers.2'], 'partial': []}} (module or parameter names "
            f"per key), got {type(redrawn).__name__} {redrawn!r}."
        )
    unknown = sorted(str(key) for key in redrawn if key not in REDRAWN_KEYS)
    if unknown:
        raise ValueError(
            f"`{name}` has unknown keys {unknown}; accepted: 'whole', 'partial' (lists of module or parameter names)."
        )
    checked: dict[str, list[str]] = {}
    for key in REDRAWN_KEYS:
        names = redrawn.get(key, [])
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n for n in names):
            raise ValueError(
                f"`{name}[{key!r}]` must be a list of module or parameter names (non-empty strings), got {names!r}."
            )
        checked[key] = list(names)
    return checked


def redrawn_parameters(
    model: nn.Module, redrawn: dict[str, Any] | None, *, argument: str | None = None
) -> tuple[set[str], set[str]]:
    """The parameter names that ``redrawn`` (a record's or a report's ``redrawn`` entry, or the user's argument)
    designates in ``model``: ``(whole, partial)``.

    Args:
        model: the model the names refer to.
        redrawn: ``{"whole": [...], "partial": [...]}`` (see [`check_redrawn`]), or None (nothing).
        argument: the user's argument name when ``redrawn`` comes from the user (the error names it and lists what
            is accepted), None when it comes from a record (the error says the record belongs to another model).

    Raises:
        ValueError: when a name matches no module or parameter of ``model``, or ``redrawn`` is malformed.
    """
    redrawn = check_redrawn(redrawn or {}, argument or "redrawn")
    modules = dict(model.named_modules())
    params = [n for n, _ in model.named_parameters()]
    whole: set[str] = set()
    unknown: list[str] = []
    for name in redrawn["whole"]:
        if name in modules and name:
            whole.update(p for p in params if p.startswith(name + "."))
        elif name in params:
            whole.add(name)
        else:
            unknown.append(name)
    partial = set(redrawn["partial"])
    unknown += sorted(partial - set(params))
    if unknown and argument is not None:
        from .architectures import get_layout

        examples = ", ".join(repr(b) for b in get_layout(model).blocks[:2])
        raise ValueError(
            f"`{argument}` names {unknown}, which match no module or parameter of {type(model).__name__}. Accepted: "
            f"the names of its modules (e.g. {examples}) or parameters, as `model.named_modules()` and "
            "`model.named_parameters()` list them; 'partial' takes parameter names only."
        )
    if unknown:
        raise ValueError(
            f"The plasticity record names {unknown[0]!r} as re-drawn, but {type(model).__name__} has no such module "
            "or parameter: the record belongs to another model."
        )
    return whole, partial
