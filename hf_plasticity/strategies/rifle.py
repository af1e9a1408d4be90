"""RIFLE (Li et al., ICML 2020): re-initialize the classification head again at a few epochs during fine-tuning.

Each re-initialization pushes a fresh error signal deep into the backbone. The head is new at the start of
fine-tuning anyway, so the one-shot restore of [`prepare_pretrained`] plans nothing; the training callback calls
[`Strategy.due`] after every optimizer step and applies [`Strategy.plan_step`] when an epoch of ``epochs`` is
reached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..architectures import get_layout
from ..config import PlasticityConfig
from ..init import derive_seed, fresh_tensors
from .base import Strategy, TensorReset, TrainingOnlySchedule, register_strategy


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

    epochs: list[float] = field(
        default_factory=lambda: [1.0, 2.0],
        metadata={"help": "Epochs (fractional allowed, > 0) at which the head is re-initialized, during training."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.epochs, (str, bytes)) or not hasattr(self.epochs, "__iter__"):
            raise ValueError(f"`epochs` must be a list of positive numbers, got {self.epochs!r}.")
        epochs = list(self.epochs)
        if not epochs or any(isinstance(e, bool) or not isinstance(e, (int, float)) or e <= 0 for e in epochs):
            raise ValueError(f"`epochs` must be a non-empty list of positive numbers, got {self.epochs!r}.")
        self.epochs = sorted(float(e) for e in epochs)


class RifleStrategy(TrainingOnlySchedule, Strategy):
    """Plans a fresh head at each epoch of ``config.epochs`` (once each, also across resume)."""

    def __init__(self, config: RifleConfig) -> None:
        super().__init__(config)
        self.done: list[float] = []
        self.epoch = 0.0

    def plan(self, model: nn.Module, *, data: Any = None) -> list[TensorReset]:
        """Nothing before training (the head is new); checks that the model has a head."""
        self.head_plan(model, salt="check")
        return []

    def head_plan(self, model: nn.Module, *, salt: str) -> list[TensorReset]:
        layout = get_layout(model)
        if not layout.head:
            raise ValueError(f"{type(model).__name__} has no classification head to re-initialize (RIFLE).")
        plan: list[TensorReset] = []
        for head in layout.head:
            module = model.get_submodule(head)
            fresh = fresh_tensors(model, module, seed=derive_seed(self.config.seed, "rifle", head, salt))
            tensors = dict(module.named_parameters())
            tensors.update(dict(module.named_buffers()))
            for name, tensor in tensors.items():
                plan.append(TensorReset(f"{head}.{name}", tensor, fresh[name], None, None))
        return plan

    def pending(self, epoch: float) -> list[float]:
        """The epochs of ``config.epochs`` reached at ``epoch`` whose re-initialization has not happened yet."""
        return [e for e in self.config.epochs if e <= epoch + 1e-9 and e not in self.done]

    def due(self, *, step: int, epoch: float) -> bool:
        self.epoch = epoch
        return bool(self.pending(epoch))

    def plan_step(self, model: nn.Module, *, step: int, data: Any = None) -> list[TensorReset]:
        """A fresh head; the epochs reached at the last [`RifleStrategy.due`] call are marked done."""
        plan = self.head_plan(model, salt=f"step{step}")
        self.done.extend(self.pending(self.epoch))
        return plan

    def state_dict(self) -> dict[str, Any]:
        return {"done": list(self.done), "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.done = [float(e) for e in state.get("done", [])]
        self.epoch = float(state.get("epoch", 0.0))


register_strategy(RifleConfig, RifleStrategy)
