"""The arms of a comparison: what is done to the loaded model before fine-tuning, and its optimizer.

Every arm trains the pretrained backbone at the backbone learning rate and the new parameters at the "own" learning
rate, so every arm is tuned on the same two-dimensional grid:

- ``standard``: plain fine-tuning; the own learning rate is the classification head's.
- ``recipe``: the library's recommended recipe: restore with the default strategy (`LayerReinitConfig()`: the last
  eighth of the blocks and the final norm re-drawn), the re-drawn blocks and the head at the own learning rate.
- ``control``: the learning-rate-only control: the same top blocks at the same own learning rate, NOT re-drawn
  (`plasticity_param_groups(..., redrawn=...)`); it tells a gain of the re-draw from a gain of the learning rate.
- any strategy name (``selective``, ``auto``, ...): restore with that strategy's default config (data-dependent ones
  score on training batches); blocks it re-draws whole and the head at the own learning rate (parameters re-drawn in
  part stay at the backbone's: a torch optimizer has one learning rate per tensor).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from itertools import islice
from typing import Any

from .splits import ComparisonInputError

STANDARD, RECIPE, CONTROL = "standard", "recipe", "control"
BUILT_IN_ARMS = (STANDARD, RECIPE, CONTROL)
#: Training batches a data-dependent strategy scores on.
CALIBRATION_BATCHES = 8


def check_arms(arms: Iterable[str]) -> list[str]:
    """The arm names, validated: known, each once, ``standard`` (the baseline of every difference) among them.

    Raises:
        ComparisonInputError: for an unknown or repeated arm, or without ``standard``.
    """
    from ..core.config import available_strategies

    arms = list(arms)
    accepted = [*BUILT_IN_ARMS, *available_strategies()]
    for arm in arms:
        if arm not in accepted:
            raise ComparisonInputError(f"Unknown arm {arm!r}. Accepted: {', '.join(accepted)}.")
    if len(set(arms)) != len(arms):
        raise ComparisonInputError(f"--arms names an arm twice: {' '.join(arms)}.")
    if STANDARD not in arms:
        raise ComparisonInputError("--arms must include standard: every arm is compared with standard fine-tuning.")
    return arms


def prepare_arm(
    arm: str, model: Any, args: Any, *, own_lr: float, calibration: Any = None
) -> tuple[Any, dict[str, Any] | None]:
    """Prepares ``model`` for ``arm`` (a restore, or nothing) and returns its optimizer for the `Trainer`.

    Args:
        arm: the arm's name.
        model: the freshly loaded model (modified in place by a restore).
        args: the run's `TrainingArguments` (``args.learning_rate`` is the backbone's learning rate).
        own_lr: the learning rate of the head and of the re-drawn (or, for the control, boosted) blocks.
        calibration: a re-iterable of training batches, for data-dependent strategies.

    Returns:
        `(torch.optim.Optimizer, dict | None)`: the optimizer, and which parameters get the own learning rate
        besides the head (``{"whole": [...], "partial": [...]}`` as a restore record names them; None for standard).
    """
    from transformers import Trainer

    from ..core.param_groups import plasticity_param_groups
    from ..integrations.trainer_optimizer import plasticity_optimizer
    from ..pipeline.restore import prepare_pretrained

    if arm == STANDARD:  # no record on the model: only the head gets the own learning rate
        return plasticity_optimizer(model, args, reinit_lr=own_lr), None
    if arm == RECIPE:
        report = prepare_pretrained(model)
        return plasticity_optimizer(model, args, reinit_lr=own_lr), report.redrawn
    if arm == CONTROL:  # what the recipe's restore would re-draw, found on a copy; the model itself is not touched
        redrawn = prepare_pretrained(copy.deepcopy(model)).redrawn
        groups = plasticity_param_groups(
            model, lr=args.learning_rate, reinit_lr=own_lr, weight_decay=args.weight_decay, redrawn=redrawn
        )
        optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
        return optimizer_cls(groups, **optimizer_kwargs), redrawn
    from ..core.config import get_config_class

    config = get_config_class(arm)()
    data = list(islice(calibration, CALIBRATION_BATCHES)) if config.requires_data else None
    if config.requires_data and not data:
        raise ComparisonInputError(f"Arm {arm!r} needs training data to score on, and there is none.")
    report = prepare_pretrained(model, config, data=data, diagnostics=False)
    partial = bool(report.redrawn.get("partial"))
    reinit_lr = args.learning_rate if partial else own_lr
    return plasticity_optimizer(model, args, reinit_lr=reinit_lr, head_lr=own_lr), report.redrawn
