"""The strategy contract and its registration.

A strategy turns a config into a [`Plan`]: the tensor writes it wants (which entries, which new values) and what it
decided beyond its config. Planning never writes into the model; the restore pipeline
([`hf_plasticity.pipeline.restore`])
applies a whole plan as one transaction, so a failure anywhere leaves the model as it was.

The contract, for a subclass:

- ``config_class``: its config dataclass (set by [`register_strategy`]);
- [`Strategy.plan`] (required): the one-shot plan, before training;
- [`Strategy.validate`]: raise a clear error now for a model the strategy cannot act on (default: the config's scope
  must match a tensor);
- [`Strategy.make_schedule`]: when it acts ([`hf_plasticity.core.schedules`]; default: once, before training);
- for strategies that act during training: [`Strategy.plan_step`], and optionally [`Strategy.attach`] /
  [`Strategy.detach`] (hooks), [`Strategy.due`] (a refinement of the schedule), [`Strategy.state_dict`] /
  [`Strategy.load_state_dict`] (running state checkpointed with the training run).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..core import registry
from ..core.config import PlasticityConfig
from ..core.plan import Plan, TensorReset
from ..core.schedules import Schedule
from ..core.targeting import resolve_targets


class Strategy:
    """Base class of every strategy.

    Args:
        config: the strategy's config (an instance of ``config_class``).
    """

    config_class: type[PlasticityConfig] = PlasticityConfig
    #: Whether the fresh writes replace the old values by fresh draws (re-initialization), as opposed to edits that
    #: keep part of them (shrink & perturb, DASH). Re-drawn parameters are named in the record and can get their own
    #: learning rate ([`plasticity_param_groups`]).
    redraws: bool = True
    #: Whether the resets during training read what [`Strategy.attach`] registers (activation hooks): the controller
    #: refuses a training step before ``attach``, which would otherwise see nothing and never reset.
    needs_attach: bool = False

    def __init__(self, config: PlasticityConfig) -> None:
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}."
            )
        self.config = config
        self.schedule: Schedule = self.make_schedule()

    @property
    def name(self) -> str:
        return self.config.strategy

    @property
    def requires_data(self) -> bool:
        """Whether [`Strategy.plan`] needs calibration data."""
        return self.config.requires_data

    def make_schedule(self) -> Schedule:
        """When the strategy acts, built from its config. Default: once, before training."""
        return Schedule()

    def validate(self, model: nn.Module) -> None:
        """Raises a clear error now if the strategy cannot act on ``model`` (default: the config's scope must match
        at least one tensor: [`ScopeError`])."""
        resolve_targets(model, self.config)

    def plan(self, model: nn.Module, *, data: Any = None) -> Plan:
        """The writes of the one-shot restore, and the decisions behind them; must not modify ``model``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ during training (driven by the controller)
    def attach(self, model: nn.Module) -> None:
        """Called once when training starts, e.g. to register activation hooks. Default: nothing."""

    def detach(self) -> None:
        """Called when training ends: removes whatever [`Strategy.attach`] added. Default: nothing."""

    def due(self, *, step: int, epoch: float) -> bool:
        """Whether a reset is due after optimizer step ``step`` (1-based) at ``epoch``. Default: the schedule's
        answer; called on every process with the same arguments, so every process agrees."""
        return self.schedule.due(step=step, epoch=epoch)

    def plan_step(self, model: nn.Module, *, step: int, data: Any = None) -> Plan:
        """The writes of one reset during training; by default the one-shot plan."""
        return self.plan(model, data=data)

    def state_dict(self) -> dict[str, Any]:
        """Running state to checkpoint with the training run (the schedule's, plus the strategy's own)."""
        return {"schedule": self.schedule.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores what [`Strategy.state_dict`] returned."""
        self.schedule.load_state_dict(state.get("schedule") or {})


class StepSaltedStrategy(Strategy):
    """A strategy whose resets during training are its one-shot plan drawn again: subclasses implement
    ``_plan(model, data, salt)``; the one-shot plan gets ``salt=""``, the reset after optimizer step N ``"stepN"``, so
    every reset draws fresh values of its own."""

    def _plan(self, model: nn.Module, data: Any, salt: str) -> list[TensorReset]:
        raise NotImplementedError

    def plan(self, model: nn.Module, *, data: Any = None) -> Plan:
        return Plan(self._plan(model, data, salt=""))

    def plan_step(self, model: nn.Module, *, step: int, data: Any = None) -> Plan:
        return Plan(self._plan(model, data, salt=f"step{step}"))


def register_strategy(
    config_class: type[PlasticityConfig], strategy_class: type[Strategy], *, replace: bool = False
) -> None:
    """Registers a strategy so that `prepare_pretrained(model, config_class(...))`, the strategy name and config
    save/load all work for it.

    Args:
        config_class: the config dataclass; its class attribute ``strategy`` is the name.
        strategy_class: the [`Strategy`] subclass.
        replace: replace a strategy already registered under the same name (refused otherwise).

    Example:

    ```python
    >>> from dataclasses import dataclass
    >>> from hf_plasticity import Plan, PlasticityConfig, Strategy, register_strategy, unregister_strategy
    >>> @dataclass
    ... class NoOpConfig(PlasticityConfig):
    ...     strategy = "noop"
    >>> class NoOp(Strategy):
    ...     def plan(self, model, *, data=None):
    ...         return Plan()
    >>> register_strategy(NoOpConfig, NoOp)
    >>> unregister_strategy("noop")
    ```
    """
    if not (isinstance(config_class, type) and issubclass(config_class, PlasticityConfig)):
        raise TypeError(f"`config_class` must subclass hf_plasticity.PlasticityConfig, got {config_class!r}.")
    if not (isinstance(strategy_class, type) and issubclass(strategy_class, Strategy)):
        raise TypeError(f"`strategy_class` must subclass hf_plasticity.Strategy, got {strategy_class!r}.")
    registry.register(config_class.strategy, config_class, strategy_class, replace=replace)
    strategy_class.config_class = config_class


def unregister_strategy(name: str) -> None:
    """Removes a registered strategy (its name, config class and strategy class).

    Raises:
        StrategyRegistryError: when no strategy of that name is registered.
    """
    registry.unregister(name)


def get_strategy(config: PlasticityConfig) -> Strategy:
    """Instantiates the strategy registered for ``config.strategy``."""
    return registry.lookup(config.strategy)[1](config)
