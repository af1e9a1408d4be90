"""The strategy interface and registry.

A strategy turns a config into a *plan*: the list of tensor writes it wants (which entries, which new values).
Planning never writes into the model; [`prepare_pretrained`] applies a whole plan at once, so a failure anywhere
leaves the model as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import PlasticityConfig, register_config

_STRATEGY_REGISTRY: dict[str, type[Strategy]] = {}


@dataclass
class TensorReset:
    """One planned write into one tensor.

    Attributes:
        name: qualified tensor name in the model.
        tensor: the parameter or buffer to write into (in place).
        values: the new values: for ``index=None`` a tensor shaped like ``tensor``; else a flat tensor with one
            value per index.
        index: flat indices of the entries to write, or None for the whole tensor.
        block: index of the backbone block holding the tensor, or None.
        fresh: True when the new values are fresh draws from the init rule (they count as re-initialized
            entries, and their optimizer state is reset); False for edits such as zeroing outgoing weights.
    """

    name: str
    tensor: torch.Tensor
    values: torch.Tensor
    index: torch.Tensor | None = None
    block: int | None = None
    fresh: bool = True

    @property
    def count(self) -> int:
        return self.tensor.numel() if self.index is None else int(self.index.numel())


class Strategy:
    """Base class of every strategy. Subclasses set ``config_class`` and implement [`Strategy.plan`].

    Args:
        config: the strategy's config (an instance of ``config_class``).
    """

    config_class: type[PlasticityConfig] = PlasticityConfig

    def __init__(self, config: PlasticityConfig) -> None:
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}."
            )
        self.config = config

    @property
    def requires_data(self) -> bool:
        """Whether [`Strategy.plan`] needs calibration data."""
        return self.config.requires_data

    def plan(self, model: nn.Module, *, data: Any = None) -> list[TensorReset]:
        """Returns the writes this strategy wants; must not modify ``model``."""
        raise NotImplementedError

    def details(self) -> dict[str, Any]:
        """What the last [`Strategy.plan`] decided beyond its config (e.g. the blocks `"auto"` chose), for the
        report. Default: nothing."""
        return {}

    # ------------------------------------------------------------------ during training (driven by the callback)
    @property
    def periodic(self) -> bool:
        """Whether the strategy acts during training (the callback calls [`Strategy.due`] every step)."""
        return False

    @property
    def one_shot(self) -> bool:
        """Whether the strategy acts once before training (through [`prepare_pretrained`])."""
        return True

    def attach(self, model: nn.Module) -> None:
        """Called once when training starts, e.g. to register activation hooks. Default: nothing."""

    def detach(self) -> None:
        """Called when training ends: removes whatever [`Strategy.attach`] added. Default: nothing."""

    def due(self, *, step: int, epoch: float) -> bool:
        """Whether a periodic reset is due after optimizer step ``step`` (1-based) at ``epoch``."""
        return False

    def plan_step(self, model: nn.Module, *, step: int, data: Any = None) -> list[TensorReset]:
        """The writes of one periodic reset; by default the same plan as the one-shot restore."""
        return self.plan(model, data=data)

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint with the training run (schedules, running utilities). Default: none."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores what [`Strategy.state_dict`] returned."""


class EveryNStepsSchedule:
    """Mixin for strategies that act once before training and, when ``config.every_n_steps`` is set, again every
    that many optimizer steps. Subclasses implement ``_plan(model, data, salt)``; each periodic reset gets its own
    ``salt`` (``"step<N>"``) so its fresh draws differ from the one-shot restore's.
    """

    config: PlasticityConfig

    def _plan(self, model: nn.Module, data: Any, salt: str) -> list[TensorReset]:
        raise NotImplementedError

    def plan(self, model: nn.Module, *, data: Any = None) -> list[TensorReset]:
        return self._plan(model, data, salt="")

    @property
    def periodic(self) -> bool:
        return self.config.every_n_steps is not None

    def due(self, *, step: int, epoch: float) -> bool:
        return self.periodic and step > 0 and step % self.config.every_n_steps == 0

    def plan_step(self, model: nn.Module, *, step: int, data: Any = None) -> list[TensorReset]:
        return self._plan(model, data, salt=f"step{step}")


class TrainingOnlySchedule:
    """Mixin for strategies that act only during training (driven by the callback), never as a one-shot restore."""

    @property
    def periodic(self) -> bool:
        return True

    @property
    def one_shot(self) -> bool:
        return False


def register_strategy(config_class: type[PlasticityConfig], strategy_class: type[Strategy]) -> None:
    """Registers a strategy so that `prepare_pretrained(model, config_class(...))`, the strategy name and config
    save/load all work for it.

    Example:

    ```python
    >>> from dataclasses import dataclass
    >>> from hf_plasticity import PlasticityConfig, Strategy, register_strategy
    >>> @dataclass
    ... class NoOpConfig(PlasticityConfig):
    ...     strategy = "noop"
    >>> class NoOp(Strategy):
    ...     config_class = NoOpConfig
    ...     def plan(self, model, *, data=None):
    ...         return []
    >>> register_strategy(NoOpConfig, NoOp)
    ```
    """
    if not (isinstance(strategy_class, type) and issubclass(strategy_class, Strategy)):
        raise TypeError(f"`strategy_class` must subclass hf_plasticity.Strategy, got {strategy_class!r}.")
    strategy_class.config_class = config_class
    register_config(config_class)
    _STRATEGY_REGISTRY[config_class.strategy] = strategy_class


def get_strategy(config: PlasticityConfig) -> Strategy:
    """Instantiates the strategy registered for ``config.strategy``."""
    if config.strategy not in _STRATEGY_REGISTRY:
        raise ValueError(
            f"No strategy is registered for {config.strategy!r}. Accepted: {', '.join(sorted(_STRATEGY_REGISTRY))}."
        )
    return _STRATEGY_REGISTRY[config.strategy](config)
