"""Optimizer parameter groups that give re-drawn parameters their own learning rate.

For the optimizer a re-drawn block is new, like the classification head: it starts from the init distribution and
needs a from-scratch learning rate, while the pretrained blocks need a small one (AdamW moves a weight by about the
learning rate per step: at a pretrained backbone's 1e-4 a fresh block barely leaves its init).
[`plasticity_param_groups`] builds the groups from what a restore re-drew (a live report, or the record saved with a
checkpoint).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .architectures import get_layout
from .norms import is_norm as is_norm_layer
from .recipe import FineTuneRecipe, check_recipe, refuse_rates_with_recipe
from .record import report_of, restore_record
from .redrawn import redrawn_parameters
from .unwrap import unwrap_model
from .validators import check_number

# The Trainer's convention (`Trainer.get_decay_parameter_names`), plus every normalization layer by type.
_NO_DECAY_NAME_PARTS = ("bias", "layernorm", "rmsnorm")


class PartialRedrawError(ValueError):
    """A separate learning rate was asked for re-drawn parameters, but some were re-drawn only in part."""


def _no_decay(model: nn.Module) -> set[str]:
    """Parameter names without weight decay: biases, and the parameters of normalization layers."""
    names = set()
    for module_name, module in model.named_modules():
        is_norm = is_norm_layer(module)
        for param_name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            leaf = full.lower()
            if is_norm or any(part in leaf for part in _NO_DECAY_NAME_PARTS) or _is_norm_name(leaf):
                names.add(full)
    return names


def _is_norm_name(name: str) -> bool:
    return any(part == "norm" or part.endswith("_norm") for part in name.split("."))


def plasticity_param_groups(
    model: nn.Module,
    *,
    lr: float | None = None,
    reinit_lr: float | None = None,
    head_lr: float | None = None,
    weight_decay: float = 0.0,
    layer_decay: float | None = None,
    report: Any = None,
    redrawn: dict[str, list[str]] | None = None,
    recipe: FineTuneRecipe | None = None,
) -> list[dict[str, Any]]:
    """Torch optimizer parameter groups in which re-drawn parameters and the head have their own learning rates.

    Every trainable parameter is in exactly one group. Groups carry ``name`` (``"backbone"``, ``"backbone.<depth>"``
    with layer decay, ``"redrawn"``, ``"head"``, each with ``".no_decay"`` for biases and norms), ``lr`` and
    ``weight_decay``; a learning-rate scheduler (e.g. the `Trainer`'s warmup and cosine) multiplies every group's
    ``lr`` by the same factor, so the ratios hold throughout training.

    What was re-drawn comes from ``report`` when given, else from the record on the model (``model.config.plasticity``,
    also after loading a restored checkpoint from the Hub). A model without a record has no re-drawn group.

    Args:
        model: the (restored) model, or a wrapper of it.
        lr: learning rate of the pretrained backbone (required unless ``recipe`` is given).
        reinit_lr: learning rate of the parameters re-drawn whole (None: ``lr``).
        head_lr: learning rate of the classification head (None: ``reinit_lr``, else ``lr``): it is new too.
        weight_decay: weight decay of every group except biases and normalization layers (0 there, as the
            `Trainer` does).
        layer_decay: layer-wise learning-rate decay over the pretrained backbone (the usual ViT fine-tuning recipe):
            block ``i`` of ``N`` (0-based) gets ``lr * layer_decay ** (N - i)``, what comes before the first block
            (embeddings) ``lr * layer_decay ** (N + 1)``, what comes after the last one (final norm) ``lr``, and what
            sits between two blocks (ConvNeXt's downsampling layers) the rate of the block after it, as in timm's and
            BEiT's layer decay. None: no decay.
        report: the [`PlasticityReport`] of the model's latest restore (default: the model's record). A report of an
            earlier restore (of a model restored again since) or of another model is refused.
        redrawn: which parameters get ``reinit_lr``, as a record names them (``{"whole": [module or parameter
            names], "partial": [...]}``), instead of what the restore re-drew: e.g. the last blocks of a model that was
            not restored, to give them a high learning rate without re-drawing them (the benchmark's control). An
            unknown key or a name that matches no module or parameter of the model is refused.
        recipe: a [`FineTuneRecipe`] (from [`recommend_recipe`]) in place of the learning rates: the backbone at its
            ``backbone_lr``, the head at its ``head_lr`` (and parameters a restore re-drew at the backbone's rate:
            a recipe gives them none of their own). Refused together with ``lr``, ``reinit_lr``, ``head_lr`` or
            ``layer_decay``.

    Returns:
        `list[dict]`: parameter groups for any torch optimizer.

    Raises:
        TypeError: when ``report`` is not a [`PlasticityReport`].
        ValueError: when ``report`` is not of the restore the model's record describes (see ``report``).
        RecordError: when ``reinit_lr`` differs from ``lr`` and the model's record predates the list of re-drawn
            parameters (a checkpoint restored by an older hf-plasticity): pass ``redrawn=`` then.
        PartialRedrawError: when ``reinit_lr`` differs from ``lr`` but some parameters were re-drawn only in part
            (selective or unit re-initialization): a torch optimizer has one learning rate per parameter tensor, so
            the re-drawn entries of a partly re-drawn tensor cannot get their own.

    Example:

    ```python
    >>> import torch
    >>> from transformers import ViTConfig, ViTForImageClassification
    >>> from hf_plasticity import plasticity_param_groups, prepare_pretrained
    >>> model = ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=4,
    ...                                             num_attention_heads=2, intermediate_size=64, num_labels=3))
    >>> _ = prepare_pretrained(model)  # the last block and the final norm re-drawn
    >>> groups = plasticity_param_groups(model, lr=1e-4, reinit_lr=1e-3, weight_decay=0.05)
    >>> [(g["name"], g["lr"], g["weight_decay"]) for g in groups]  # doctest: +NORMALIZE_WHITESPACE
    [('backbone', 0.0001, 0.05), ('backbone.no_decay', 0.0001, 0.0), ('redrawn', 0.001, 0.05),
     ('redrawn.no_decay', 0.001, 0.0), ('head', 0.001, 0.05), ('head.no_decay', 0.001, 0.0)]
    >>> optimizer = torch.optim.AdamW(groups)
    ```

    With a recipe instead of learning rates:

    ```python
    >>> from hf_plasticity import FineTuneRecipe
    >>> recipe = FineTuneRecipe(backbone_lr=3e-3, head_lr=1e-3)  # or recommend_recipe(model, data)
    >>> [(g["name"], g["lr"]) for g in plasticity_param_groups(model, recipe=recipe)][-2:]
    [('head', 0.001), ('head.no_decay', 0.001)]
    ```
    """
    check_recipe(recipe)
    if recipe is not None:
        refuse_rates_with_recipe(recipe, lr=lr, reinit_lr=reinit_lr, head_lr=head_lr, layer_decay=layer_decay)
        lr, head_lr = recipe.backbone_lr, recipe.head_lr
    if lr is None:
        raise ValueError("`lr` (the backbone's learning rate) is required, unless a `recipe=` gives the rates.")
    check_number("lr", lr, low=0)
    check_number("reinit_lr", reinit_lr, low=0, allow_none=True)
    check_number("head_lr", head_lr, low=0, allow_none=True)
    check_number("weight_decay", weight_decay, low=0)
    check_number("layer_decay", layer_decay, low=0, high=1, low_open=True, allow_none=True)
    model = unwrap_model(model)
    argument = "redrawn" if redrawn is not None else None
    reinit_lr = lr if reinit_lr is None else reinit_lr
    if redrawn is None and report is not None:
        redrawn = report_of(model, report).redrawn
    elif redrawn is None:
        record = restore_record(model)
        if record is not None:  # an older record without the re-drawn names: refused when they matter
            redrawn = record.redrawn_or_refuse() if reinit_lr != lr else record.redrawn
    whole, partial = redrawn_parameters(model, redrawn, argument=argument)
    head_lr = reinit_lr if head_lr is None else head_lr
    if partial and reinit_lr != lr:
        raise PartialRedrawError(
            f"{len(partial)} parameters were re-drawn only in part (e.g. {sorted(partial)[0]!r}, by a selective or "
            "unit re-initialization): a torch optimizer has one learning rate per tensor, so their re-drawn entries "
            "cannot get `reinit_lr`. Use a whole-block restore (`LayerReinitConfig`, `AutoReinitConfig`) for a "
            "re-drawn learning rate, or leave `reinit_lr=None`."
        )
    layout = get_layout(model)
    no_decay = _no_decay(model)
    depth = _depths(model, layout)
    groups: dict[str, dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if layout.in_head(name):
            role, rate = "head", head_lr
        elif name in whole:
            role, rate = "redrawn", reinit_lr
        elif layer_decay is None:
            role, rate = "backbone", lr
        else:
            role, rate = f"backbone.{depth[name]}", lr * layer_decay ** (len(layout.blocks) + 1 - depth[name])
        key = role + (".no_decay" if name in no_decay else "")
        group = groups.setdefault(
            key, {"name": key, "params": [], "lr": rate, "weight_decay": 0.0 if name in no_decay else weight_decay}
        )
        group["params"].append(param)
    return [groups[key] for key in sorted(groups, key=_order)]


def _depths(model: nn.Module, layout: Any) -> dict[str, int]:
    """Per parameter: i + 1 in block i; outside the blocks, the depth of the next block (0 before the first block:
    the embeddings; N + 1 after the last one: the final norm).

    A parameter between two blocks (ConvNeXt's downsampling layer at the start of each stage) is grouped with the block
    it feeds, the first block of its stage, as timm's ConvNeXt ``group_matcher`` and BEiT's layer decay do: it never
    learns faster than the block after it.
    """
    names = [n for n, _ in model.named_parameters()]
    blocks = {n: layout.block_of(n) for n in names}
    depths: dict[str, int] = {}
    following = len(layout.blocks) + 1  # the depth of the next block, walking from the top down
    for name in reversed(names):
        block = blocks[name]
        if block is not None:
            following = block + 1
        depths[name] = following
    first = next((i for i, n in enumerate(names) if blocks[n] is not None), len(names))
    depths.update({n: 0 for n in names[:first]})  # the embeddings: one step below the first block
    return depths


def _order(key: str) -> tuple[int, int, bool]:
    role = key.removesuffix(".no_decay")
    rank = {"backbone": 0, "redrawn": 2, "head": 3}.get(role.split(".")[0], 1)
    depth = int(role.split(".")[1]) if role.startswith("backbone.") else 0
    return (rank, -depth, key.endswith(".no_decay"))
