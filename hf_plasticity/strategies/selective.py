"""Selective (targeted) weight re-initialization: re-draw the lowest-utility weights of each targeted tensor.

The closest published template is Selective Weight Reinitialization (Hernandez-Garcia et al., 2025): score every
weight, select per tensor, and resample the selected entries from the layer's own init distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..config import PlasticityConfig, _check_choice
from ..init import derive_seed, fresh_tensors
from ..targeting import resolve_targets
from ..utilities import DATA_UTILITIES, UTILITIES, compute_utilities
from .base import Strategy, TensorReset, register_strategy

SELECTIONS = ("proportional", "threshold")
GRANULARITIES = ("weight",)


@dataclass
class SelectiveReinitConfig(PlasticityConfig):
    """Re-initialize the lowest-utility weights of every targeted tensor.

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
    granularity: str = field(default="weight", metadata={"help": f"What is re-initialized: {list(GRANULARITIES)}."})
    calibration_batches: int = field(
        default=8, metadata={"help": "Downstream batches averaged for the gradient utilities."}
    )
    calibration_batch_size: int = field(
        default=32, metadata={"help": "Rows per calibration batch when the data is a datasets.Dataset."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice("utility", self.utility, UTILITIES)
        _check_choice("selection", self.selection, SELECTIONS)
        _check_choice("granularity", self.granularity, GRANULARITIES)
        if not isinstance(self.fraction, (int, float)) or not 0 < self.fraction <= 1:
            raise ValueError(f"`fraction` must be in (0, 1], got {self.fraction!r}.")
        if not isinstance(self.threshold, (int, float)) or self.threshold < 0:
            raise ValueError(f"`threshold` must be >= 0, got {self.threshold!r}.")
        for name in ("calibration_batches", "calibration_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")

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


class SelectiveReinitStrategy(Strategy):
    """Scores the targeted weights, selects per tensor, and plans fresh values for the selected entries."""

    def select(self, utility: torch.Tensor, name: str) -> torch.Tensor:
        """Flat indices of the entries to re-initialize in one tensor."""
        flat = utility.reshape(-1)
        if self.config.selection == "threshold":
            return torch.nonzero(flat <= self.config.threshold * flat.mean()).reshape(-1)
        generator = torch.Generator().manual_seed(derive_seed(self.config.seed, "count", name))
        count = proportional_count(flat.numel(), self.config.fraction, generator)
        return torch.argsort(flat, stable=True)[:count]

    def plan(self, model: nn.Module, *, data: Any = None) -> list[TensorReset]:
        config = self.config
        targets = resolve_targets(model, config)
        plan: list[TensorReset] = []
        scores = compute_utilities(
            model,
            targets,
            config.utility,
            data=data,
            num_batches=config.calibration_batches,
            batch_size=config.calibration_batch_size,
            seed=config.seed,
        )
        for target, utility in scores:
            index = self.select(utility, target.name).to(target.tensor.device)
            if index.numel() == 0:
                continue
            module = model.get_submodule(target.module_name)
            fresh = fresh_tensors(model, module, seed=derive_seed(config.seed, target.module_name))[target.attr]
            plan.append(TensorReset(target.name, target.tensor, fresh.reshape(-1)[index].clone(), index, target.block))
        return plan


register_strategy(SelectiveReinitConfig, SelectiveReinitStrategy)
