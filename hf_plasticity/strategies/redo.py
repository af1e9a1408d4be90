"""ReDo: recycle dormant units (Sokar et al., ICML 2023).

A unit is dormant when its normalized activation score s_i = E|h_i| / mean_k E|h_k| is at most ``tau``. Its incoming
weights and bias are re-drawn with the model's init rule (and its BatchNorm channel re-initialized), its outgoing
weights are zeroed: the network's function is unchanged at the moment of the reset. Every hidden layer is scored, as
in the references (timoklein/redo, dopamine labs/redo): the one that feeds the head too (resetting its unit zeroes
the head's input column), and a conv whose channels are flattened into a Linear (a channel owns a block of columns).
The output layer itself is never reset. Where the library departs from the references, and why: docs/METHODS.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.config import PlasticityConfig
from ..core.plan import TensorReset, fresh_first
from ..core.schedules import Schedule, every_n_steps
from ..core.units import normalized_scores, plan_unit_reset, resolve_unit_groups, unit_activation_means
from ..core.validators import check_number, check_positive_int
from .base import StepSaltedStrategy, register_strategy


@dataclass
class ReDoConfig(PlasticityConfig):
    """Re-initialize dormant hidden units (ReDo): incoming weights fresh, outgoing weights zero.

    Units: ViT ``mlp.fc1`` rows / ``mlp.fc2`` columns, ConvNeXt ``pwconv1`` rows / ``pwconv2`` columns, ResNet conv
    output channels with their BatchNorm channels; other models through the structural fallback of
    [`hf_plasticity.core.units`]. Used once by [`prepare_pretrained`], and every ``every_n_steps`` optimizer steps
    when a training callback drives it.

    Example:

    ```python
    >>> from hf_plasticity import ReDoConfig
    >>> ReDoConfig(tau=0.025).requires_data
    True
    ```
    """

    strategy = "redo"
    requires_data = True

    tau: float = field(
        default=0.1,
        metadata={
            "help": "Dormancy threshold on the normalized score E|h_i| / mean_k E|h_k|: 0.1 (published default), "
            "0.025 (strict), 0 (dead units only). Must be >= 0."
        },
    )
    every_n_steps: int | None = field(
        default=1000, metadata={"help": "During training: check and recycle every n optimizer steps (None: never)."}
    )
    calibration_batches: int = field(default=2, metadata={"help": "Batches used to score the units."})
    calibration_batch_size: int = field(
        default=32, metadata={"help": "Rows per scoring batch when the data is a datasets.Dataset."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("tau", self.tau, low=0)
        check_positive_int("every_n_steps", self.every_n_steps, allow_none=True)
        check_positive_int("calibration_batches", self.calibration_batches)
        check_positive_int("calibration_batch_size", self.calibration_batch_size)


class ReDoStrategy(StepSaltedStrategy):
    """Scores every unit in scope on downstream batches and plans the reset of the dormant ones: once before
    training, and every ``every_n_steps`` optimizer steps during training (each time with fresh draws of its own)."""

    def make_schedule(self) -> Schedule:
        return every_n_steps(self.config.every_n_steps)

    def validate(self, model: nn.Module) -> None:
        resolve_unit_groups(model, self.config)

    def dormant_units(self, model: nn.Module, data: Any) -> list[tuple[Any, torch.Tensor]]:
        """``(group, dormant unit indices)`` for every unit group in scope."""
        groups = resolve_unit_groups(model, self.config)
        means = unit_activation_means(
            model, groups, data, self.config.calibration_batches, self.config.calibration_batch_size
        )
        result = []
        for group in groups:
            if group.producer not in means:
                continue
            scores = normalized_scores(means[group.producer])
            result.append((group, torch.nonzero(scores <= self.config.tau).reshape(-1)))
        return result

    def _plan(self, model: nn.Module, data: Any, salt: str) -> list[TensorReset]:
        plan: list[TensorReset] = []
        for group, units in self.dormant_units(model, data):
            plan.extend(plan_unit_reset(model, group, units, seed=self.config.seed, salt=salt))
        return fresh_first(plan)


register_strategy(ReDoConfig, ReDoStrategy)
