"""RIFLE (Li et al., ICML 2020): re-initialize the classification head again at a few epochs during fine-tuning.

Each re-initialization pushes a fresh error signal deep into the backbone. The head is new at the start of
fine-tuning anyway, so the one-shot restore of [`prepare_pretrained`] plans nothing; its [`AtEpochs`] schedule tells
the training callback when an epoch of ``epochs`` is reached, and [`Strategy.plan_step`] plans the fresh head.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..core.architectures import get_layout
from ..core.config import PlasticityConfig
from ..core.init import derive_seed, fresh_tensors
from ..core.plan import Plan, TensorReset
from ..core.schedules import AtEpochs, Schedule
from ..core.validators import check_number
from .base import Strategy, register_strategy


@dataclass
class RifleConfig(PlasticityConfig):
    """Re-initialize the head at the given (fractional) epochs during training.

    For E epochs and K re-initializations, RIFLE spaces them evenly: ``epochs=[E/K, 2E/K, ..., (K-1)E/K]`` (the
    last period lets the head converge). The default suits a 3-epoch fine-tune; the scope fields do not apply (the
    head is the unit).

    Example:

    ```python
    >>> from hf_plasticity import RifleConfig
    >>> RifleConfig(epochs=[2.5, 5.0, 7.5]).epochs
    [2.5, 5.0, 7.5]
    ```
    """

    strategy = "rifle"
    unused_scope_fields = ("target_modules", "exclude_modules", "last_k_blocks", "include_bias", "include_norm")

    epochs: list[float] = field(
        default_factory=lambda: [1.0, 2.0],
        metadata={"help": "Epochs (fractional allowed, > 0) at which the head is re-initialized, during training."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.epochs, (str, bytes)) or not isinstance(self.epochs, (list, tuple)) or not self.epochs:
            raise ValueError(f"`epochs` must be a non-empty list of positive numbers, got {self.epochs!r}.")
        for epoch in self.epochs:
            try:
                check_number("epochs", epoch, low=0, low_open=True)
            except ValueError as error:
                raise ValueError(
                    f"`epochs` must be a non-empty list of positive numbers, got {self.epochs!r}."
                ) from error
        self.epochs = sorted(float(e) for e in self.epochs)


class RifleStrategy(Strategy):
    """Plans a fresh head at each epoch of ``config.epochs`` (once each, also across resume: the schedule remembers
    the epochs done)."""

    def make_schedule(self) -> Schedule:
        return AtEpochs(epochs=list(self.config.epochs))

    def validate(self, model: nn.Module) -> None:
        if not get_layout(model).head:
            raise ValueError(f"{type(model).__name__} has no classification head to re-initialize (RIFLE).")

    def plan(self, model: nn.Module, *, data: Any = None) -> Plan:
        """Nothing before training (the head is new); checks that the model has a head."""
        self.validate(model)
        return Plan()

    def plan_step(self, model: nn.Module, *, step: int, data: Any = None) -> Plan:
        """A fresh head, drawn with the model's init rule (a draw of its own for every step)."""
        self.validate(model)
        plan: list[TensorReset] = []
        for head in get_layout(model).head:
            module = model.get_submodule(head)
            fresh = fresh_tensors(model, module, seed=derive_seed(self.config.seed, "rifle", head, f"step{step}"))
            tensors = dict(module.named_parameters())
            tensors.update(dict(module.named_buffers()))
            for name, tensor in tensors.items():
                plan.append(TensorReset(f"{head}.{name}", tensor, fresh[name], None, None))
        return Plan(plan)


register_strategy(RifleConfig, RifleStrategy)
