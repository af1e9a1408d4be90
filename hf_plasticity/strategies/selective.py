"""Selective (targeted) weight re-initialization: re-draw the lowest-utility weights of each targeted tensor.

The closest published template is Selective Weight Reinitialization (Hernandez-Garcia et al., 2025): score every
weight, select per tensor, and resample the selected entries from the layer's own init distribution. The utilities and
selections are checked against a direct computation (tests/test_reference_selective.py; see docs/METHODS.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.config import PlasticityConfig
from ..core.init import derive_seed, fresh_tensors
from ..core.plan import TensorReset, fresh_first
from ..core.schedules import Schedule, every_n_steps
from ..core.targeting import Target, resolve_targets
from ..core.units import plan_unit_reset, resolve_unit_groups
from ..core.utilities import DATA_UTILITIES, UTILITIES, compute_utilities
from ..core.validators import check_choice, check_number, check_positive_int
from .base import StepSaltedStrategy, register_strategy

SELECTIONS = ("proportional", "threshold")
GRANULARITIES = ("weight", "unit")


@dataclass
class SelectiveReinitConfig(PlasticityConfig):
    """Re-initialize the lowest-utility weights (or hidden units) of every targeted tensor.

    With ``granularity="unit"`` a hidden unit is scored by the mean utility of its incoming weights, and whole units
    are reset through the unit map that ReDo uses (incoming weights fresh, outgoing weights zero, so the function is
    unchanged at the moment of the reset); ``fraction`` and ``threshold`` then apply to the units of each layer.
    With ``every_n_steps`` the strategy also acts during training (SWR's continual mode: threshold selection every
    T steps, T = 128 and z = 5e-4 for ViT), driven by the training callback.

    Example:

    ```python
    >>> from hf_plasticity import SelectiveReinitConfig
    >>> config = SelectiveReinitConfig(utility="magnitude", fraction=0.05)
    >>> config.requires_data
    False
    ```
    """

    strategy = "selective"

    utility: str = field(
        default="grad_x_weight",
        metadata={"help": f"Per-weight utility, one of {list(UTILITIES)}; low utility is re-initialized."},
    )
    selection: str = field(
        default="proportional",
        metadata={
            "help": "`proportional`: the `fraction` lowest-utility weights of each tensor; `threshold`: every "
            "weight with utility <= `threshold` * the tensor's mean utility."
        },
    )
    fraction: float = field(
        default=0.01, metadata={"help": "Share of each tensor re-initialized (proportional selection), in (0, 1]."}
    )
    threshold: float = field(
        default=5e-4, metadata={"help": "Relative utility threshold z (threshold selection), >= 0."}
    )
    granularity: str = field(
        default="weight",
        metadata={
            "help": f"What is re-initialized: {list(GRANULARITIES)}; `unit` scores a hidden unit by the mean utility "
            "of its incoming weights and resets whole units (incoming fresh, outgoing zero)."
        },
    )
    every_n_steps: int | None = field(
        default=None,
        metadata={"help": "During training: re-select every n optimizer steps (None: one-shot only)."},
    )
    calibration_batches: int = field(
        default=8, metadata={"help": "Downstream batches averaged for the gradient utilities."}
    )
    calibration_batch_size: int = field(
        default=32, metadata={"help": "Rows per calibration batch when the data is a datasets.Dataset."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("utility", self.utility, UTILITIES)
        check_choice("selection", self.selection, SELECTIONS)
        check_choice("granularity", self.granularity, GRANULARITIES)
        check_number("fraction", self.fraction, low=0, high=1, low_open=True)
        check_number("threshold", self.threshold, low=0)
        check_positive_int("every_n_steps", self.every_n_steps, allow_none=True)
        check_positive_int("calibration_batches", self.calibration_batches)
        check_positive_int("calibration_batch_size", self.calibration_batch_size)

    @property
    def requires_data(self) -> bool:  # type: ignore[override]
        return self.utility in DATA_UTILITIES


def proportional_count(numel: int, fraction: float, generator: torch.Generator) -> int:
    """floor(fraction * numel), plus one with probability equal to the fractional remainder."""
    exact = fraction * numel
    count = math.floor(exact)
    if torch.rand((), generator=generator).item() < exact - count:
        count += 1
    return min(count, numel)


class SelectiveReinitStrategy(StepSaltedStrategy):
    """Scores the targeted weights, selects per tensor, and plans fresh values for the selected entries; with
    ``every_n_steps``, again every that many optimizer steps (each time with fresh draws of its own)."""

    def make_schedule(self) -> Schedule:
        return every_n_steps(self.config.every_n_steps)

    def validate(self, model: nn.Module) -> None:
        if self.config.granularity == "unit":
            resolve_unit_groups(model, self.config)
        else:
            resolve_targets(model, self.config)

    def select(self, utility: torch.Tensor, name: str) -> torch.Tensor:
        """Flat indices of the entries to re-initialize in one tensor."""
        flat = utility.reshape(-1)
        if self.config.selection == "threshold":
            return torch.nonzero(flat <= self.config.threshold * flat.mean()).reshape(-1)
        generator = torch.Generator().manual_seed(derive_seed(self.config.seed, "count", name))
        count = proportional_count(flat.numel(), self.config.fraction, generator)
        if count == 0:
            return torch.empty(0, dtype=torch.long, device=flat.device)
        return torch.topk(flat, count, largest=False, sorted=False).indices

    def _scores(self, model: nn.Module, targets: list[Target], data: Any, salt: str):
        config = self.config
        return compute_utilities(
            model,
            targets,
            config.utility,
            data=data,
            num_batches=config.calibration_batches,
            batch_size=config.calibration_batch_size,
            seed=derive_seed(config.seed, salt) if salt else config.seed,
        )

    def _plan(self, model: nn.Module, data: Any, salt: str) -> list[TensorReset]:
        if self.config.granularity == "unit":
            return self._plan_units(model, data, salt)
        config = self.config
        plan: list[TensorReset] = []
        # Targets come in module order: a module's weight and bias share one fresh draw, and only the current
        # module's draw is held.
        drawn_for, drawn = None, {}
        for target, utility in self._scores(model, resolve_targets(model, config), data, salt):
            index = self.select(utility, target.name).to(target.tensor.device)
            if index.numel() == 0:
                continue
            if drawn_for != target.module_name:
                module = model.get_submodule(target.module_name)
                seed = (
                    derive_seed(config.seed, target.module_name, salt)
                    if salt
                    else derive_seed(config.seed, target.module_name)
                )
                drawn_for, drawn = target.module_name, fresh_tensors(model, module, seed=seed)
            fresh = drawn[target.attr]
            plan.append(TensorReset(target.name, target.tensor, fresh.reshape(-1)[index].clone(), index, target.block))
        return plan

    def _plan_units(self, model: nn.Module, data: Any, salt: str) -> list[TensorReset]:
        groups = resolve_unit_groups(model, self.config)
        targets = []
        for group in groups:
            weight = model.get_submodule(group.producer).weight
            targets.append(Target(f"{group.producer}.weight", group.producer, "weight", weight, group.block))
        plan: list[TensorReset] = []
        for group, (target, utility) in zip(groups, self._scores(model, targets, data, salt)):
            unit_utility = utility.reshape(utility.shape[0], -1).mean(1)
            units = self.select(unit_utility, target.name)
            plan.extend(plan_unit_reset(model, group, units, seed=self.config.seed, salt=salt))
        return fresh_first(plan)


register_strategy(SelectiveReinitConfig, SelectiveReinitStrategy)
