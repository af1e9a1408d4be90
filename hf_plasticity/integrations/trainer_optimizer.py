"""The optimizer of a `transformers.Trainer` run with re-drawn parameters at their own learning rate.

With the `Trainer`, the route with every guarantee is ``PlasticityCallback(reinit_lr=..., head_lr=...,
layer_decay=...)`` in a [`PlasticityTrainer`]: it restores when the Trainer creates its optimizer and builds it with
this same function's groups (console line, logged metrics, card section, ``plasticity_config.json``, resume guard).
[`plasticity_optimizer`] is the building block for a `Trainer(optimizers=(optimizer, None))` of one's own after
[`prepare_pretrained`], outside those guarantees: the Trainer then builds its scheduler on it, and a
``resume_from_checkpoint`` loads the optimizer state into the same groups (restore again first, as in the first run).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainingArguments

from ..core.param_groups import plasticity_param_groups
from ..core.recipe import FineTuneRecipe, check_recipe, refuse_rates_with_recipe


def plasticity_optimizer(
    model: nn.Module,
    args: TrainingArguments,
    *,
    reinit_lr: float | None = None,
    head_lr: float | None = None,
    layer_decay: float | None = None,
    report: Any = None,
    recipe: FineTuneRecipe | None = None,
) -> torch.optim.Optimizer:
    """The optimizer ``args.optim`` names (AdamW by default, with ``args``' betas and epsilon), over
    [`plasticity_param_groups`]: the backbone at ``args.learning_rate`` with ``args.weight_decay``, the parameters a
    restore re-drew at ``reinit_lr``, the head at ``head_lr``; or, with ``recipe``, the backbone and the head at the
    recipe's rates (``args.learning_rate`` is not used then).

    Args:
        model: the restored model (a record on it, or ``report``, says what was re-drawn).
        args: the Trainer's arguments.
        reinit_lr: learning rate of the re-drawn parameters.
        head_lr: learning rate of the classification head (None: ``reinit_lr``).
        layer_decay: layer-wise learning-rate decay over the pretrained blocks (None: none).
        report: the restore's [`PlasticityReport`] (default: the model's record).
        recipe: a [`FineTuneRecipe`] (from [`recommend_recipe`]) in place of the learning rates; refused together with
            ``reinit_lr``, ``head_lr`` or ``layer_decay``.

    Example:

    ```python
    >>> report = prepare_pretrained(model)  # doctest: +SKIP
    >>> trainer = Trainer(model=model, args=args, train_dataset=train_ds,
    ...                   optimizers=(plasticity_optimizer(model, args, reinit_lr=1e-3), None))  # doctest: +SKIP
    >>> recipe = recommend_recipe(model, train_ds)  # doctest: +SKIP
    >>> optimizer = plasticity_optimizer(model, args, recipe=recipe)  # doctest: +SKIP
    ```
    """
    check_recipe(recipe)
    refuse_rates_with_recipe(recipe, reinit_lr=reinit_lr, head_lr=head_lr, layer_decay=layer_decay)
    if recipe is None and reinit_lr is None:
        raise ValueError(
            "`reinit_lr` (the re-drawn parameters' learning rate) is required, unless `recipe=` is given."
        )
    rates = {"recipe": recipe} if recipe is not None else {"lr": args.learning_rate, "reinit_lr": reinit_lr}
    groups = plasticity_param_groups(
        model, head_lr=head_lr, weight_decay=args.weight_decay, layer_decay=layer_decay, report=report, **rates
    )
    optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    return optimizer_cls(groups, **optimizer_kwargs)
