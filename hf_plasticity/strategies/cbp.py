"""Continual Backprop (Dohare et al., Nature 2024): keep replacing the least useful mature units during training.

Reference: shibhansh/loss-of-plasticity, ``lop/algos/gnt.py`` (``convGnT.py`` for convolutions). After every optimizer
step, with the hidden activations ``h`` of that step's training forward passes:

- every unit ages by one; its contribution utility and mean activation are updated:
  u_i <- decay * u_i + (1 - decay) * mean|h_i| * mean_k |w_out[k, i]|, f_i <- decay * f_i + (1 - decay) * mean h_i;
- among units older than ``maturity``, a fraction ``replacement_rate`` is replaced (fractional counts accumulate
  across steps), the lowest *bias-corrected* utility u_i / (1 - decay^age_i) first: fresh incoming weights, zero
  outgoing weights, and the consumer's bias corrected by the unit's bias-corrected mean activation,
  b <- b + w_out[:, i] * f_i / (1 - decay^age_i), so the function barely moves;
- the optimizer moments of the incoming weights and bias and of the outgoing weights are zeroed (the reference's
  ``update_optim_params``); those of the corrected bias are kept, as in the reference.

It acts during training only (a training callback drives it); [`prepare_pretrained`] with it only checks that the
model's units can be mapped. Where the library departs from the reference, and why: docs/METHODS.md.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.architectures import get_layout
from ..core.config import PlasticityConfig
from ..core.plan import Plan, TensorReset, fresh_first
from ..core.schedules import EveryStep, Schedule
from ..core.units import UnitGroup, consumer_columns, plan_unit_reset, resolve_unit_groups
from ..core.validators import check_int, check_number
from .base import Strategy, register_strategy

#: Published defaults (replacement rate, maturity) per architecture family ([`ArchitectureRule.family`]).
DEFAULTS = {"transformer": (1e-7, 10000), "cnn": (1e-5, 1000), "mlp": (1e-4, 100)}


@dataclass
class ContinualBackpropConfig(PlasticityConfig):
    """Continual Backprop during fine-tuning (callback-driven); replacement rate and maturity default by model kind.

    Example:

    ```python
    >>> from hf_plasticity import ContinualBackpropConfig
    >>> ContinualBackpropConfig(replacement_rate=1e-5, maturity=1000).strategy
    'cbp'
    ```
    """

    strategy = "cbp"

    replacement_rate: float | None = field(
        default=None,
        metadata={
            "help": "rho: share of mature units replaced per step, in [0, 1]. None: ViT 1e-7, CNN 1e-5, MLP 1e-4."
        },
    )
    maturity: int | None = field(
        default=None,
        metadata={
            "help": "m: steps a unit is protected after (re)initialization. None: ViT 10000, CNN 1000, MLP 100."
        },
    )
    decay: float = field(default=0.99, metadata={"help": "eta: decay of the running utility, in [0, 1)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("replacement_rate", self.replacement_rate, low=0, high=1, allow_none=True)
        check_int("maturity", self.maturity, low=0, allow_none=True)
        check_number("decay", self.decay, low=0, high=1, high_open=True)


class ContinualBackpropStrategy(Strategy):
    """Hidden activations through forward pre-hooks on the consumers (training forward passes with gradients only),
    utilities updated once per optimizer step in [`ContinualBackpropStrategy.due`], replacements planned in
    [`Strategy.plan_step`].

    The state (utilities, ages, mean activations, fractional counts) is JSON-able and survives a resume through
    [`Strategy.state_dict`] / [`Strategy.load_state_dict`].
    """

    needs_attach = True

    def __init__(self, config: ContinualBackpropConfig) -> None:
        super().__init__(config)
        self.groups: list[UnitGroup] = []
        self.state: dict[str, dict[str, Any]] = {}
        self.rate, self.maturity = 0.0, 0
        self.last_step: int | None = None
        self._handles: list[Any] = []
        self._consumers: dict[str, nn.Module] = {}
        self._seen: dict[str, dict[str, Any]] = {}
        self._loaded: dict[str, Any] | None = None
        self._attached_to: weakref.ref[nn.Module] | None = None

    def make_schedule(self) -> Schedule:
        """Asked after every optimizer step, never before training; [`ContinualBackpropStrategy.due`] says when a
        replacement is due."""
        return EveryStep()

    def validate(self, model: nn.Module) -> None:
        resolve_unit_groups(model, self.config)

    def plan(self, model: nn.Module, *, data: Any = None) -> Plan:
        """Nothing before training; checks that the units can be mapped (raises `UnitMapError` otherwise)."""
        self.validate(model)
        return Plan()

    def attach(self, model: nn.Module) -> None:
        """Registers the activation hooks on ``model``. Attaching again to the same model (e.g. once per epoch of a
        plain loop) keeps the units' utilities and ages; a new run starts from a fresh strategy."""
        self.detach()
        same_model = self._attached_to is not None and self._attached_to() is model
        self._attached_to = weakref.ref(model)
        self.groups = resolve_unit_groups(model, self.config)
        rate, maturity = DEFAULTS[get_layout(model).family]
        self.rate = rate if self.config.replacement_rate is None else self.config.replacement_rate
        self.maturity = maturity if self.config.maturity is None else self.config.maturity
        kept = self.state if same_model else {}
        self.state = {}
        for group in self.groups:
            units = group.num_units(model)
            previous = kept.get(group.producer)
            if previous is not None and len(previous["age"]) == units:
                self.state[group.producer] = previous
            else:
                self.state[group.producer] = {
                    "utility": torch.zeros(units),
                    "mean": torch.zeros(units),
                    "age": torch.zeros(units, dtype=torch.long),
                    "pending": 0.0,
                }
            consumer = model.get_submodule(group.consumer)
            self._consumers[group.producer] = consumer
            self._handles.append(consumer.register_forward_pre_hook(self._hook(group, group.channel_dim(model))))
        if self._loaded is not None:
            self._restore(self._loaded)

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._seen.clear()

    def _hook(self, group: UnitGroup, dim: int):
        """Sums |h| (per unit and position) and h (per unit) over the training forward passes of the current step."""

        def hook(module: nn.Module, args: tuple) -> None:
            if not module.training or not torch.is_grad_enabled():  # evaluation, scoring, recalibration passes
                return
            with torch.no_grad():
                h = group.split(args[0].detach().float(), dim)  # (samples, units, span)
                seen = self._seen.setdefault(group.producer, {"abs": 0.0, "sum": 0.0, "count": 0})
                seen["abs"] = seen["abs"] + h.abs().sum(0).cpu()
                seen["sum"] = seen["sum"] + h.sum((0, 2)).cpu()
                seen["count"] += h.shape[0]

        return hook

    def _update(self, group: UnitGroup, state: dict[str, Any]) -> None:
        """Folds the step's activations into the running utility and mean (gnt.py ``update_utility``): the outgoing
        weight magnitude is read now, after the optimizer step, as in the reference."""
        seen = self._seen.pop(group.producer, None)
        if seen is None or not seen["count"]:
            return
        decay = self.config.decay
        weight = self._consumers[group.producer].weight.detach().float()
        outgoing = weight.abs().transpose(0, 1).reshape(state["utility"].numel(), group.span, -1).mean(-1).cpu()
        magnitude = seen["abs"] / seen["count"]  # mean |h| per unit and position, (units, span)
        state["utility"].mul_(decay).add_((1 - decay) * (magnitude * outgoing).mean(1))
        state["mean"].mul_(decay).add_((1 - decay) * seen["sum"] / (seen["count"] * group.span))

    def age_correction(self, state: dict[str, Any]) -> torch.Tensor:
        """1 - decay^age per unit (Adam-style bias correction): divides the running utility and mean of young units."""
        return 1 - self.config.decay ** state["age"].float()

    def due(self, *, step: int, epoch: float) -> bool:
        """Once per optimizer step: ages every unit by one, updates the utilities with the step's activations,
        accumulates the replacement counts; says whether a whole unit is due somewhere."""
        if step != self.last_step:  # once per optimizer step, however often it is asked
            self.last_step = step
            for group in self.groups:
                state = self.state[group.producer]
                state["age"] += 1
                self._update(group, state)
                state["pending"] += self.rate * int((state["age"] > self.maturity).sum())
        return any(state["pending"] >= 1 for state in self.state.values())

    def plan_step(self, model: nn.Module, *, step: int, data: Any = None) -> Plan:
        """Replaces the due units, the lowest bias-corrected utility first. The bias corrections come first in the
        plan, so that a consumer that is also a producer keeps the fresh bias of its own replaced units."""
        corrections: list[TensorReset] = []
        resets: list[TensorReset] = []
        for group in self.groups:
            state = self.state[group.producer]
            eligible = torch.nonzero(state["age"] > self.maturity).reshape(-1)
            count = min(math.floor(state["pending"]), eligible.numel())
            if count < 1:
                continue
            state["pending"] -= math.floor(state["pending"])
            correction = self.age_correction(state)
            order = torch.argsort((state["utility"] / correction)[eligible], stable=True)
            units = eligible[order[:count]]
            resets.extend(plan_unit_reset(model, group, units, seed=self.config.seed, salt=f"cbp-step{step}"))
            corrections.extend(self._next_bias_correction(model, group, units, (state["mean"] / correction)[units]))
            for key in ("utility", "mean", "age"):
                state[key][units] = 0
        return Plan(corrections + fresh_first(resets))

    @staticmethod
    def _next_bias_correction(
        model: nn.Module, group: UnitGroup, units: torch.Tensor, mean: torch.Tensor
    ) -> list[TensorReset]:
        """consumer.bias += sum over the units' columns of w_out * mean (a Conv consumer: summed over its kernel, so
        exact away from padded borders). Its optimizer state is kept (``reset_state=False``)."""
        consumer = model.get_submodule(group.consumer)
        if getattr(consumer, "bias", None) is None:
            return []
        weight = consumer.weight.detach().float()
        columns = weight.reshape(weight.shape[0], -1)[:, consumer_columns(group, weight[:1], units)]
        columns = columns.reshape(weight.shape[0], units.numel(), -1).sum(-1)
        values = (consumer.bias.detach().float() + columns @ mean.to(columns.device)).to(consumer.bias.dtype)
        return [
            TensorReset(
                f"{group.consumer}.bias", consumer.bias, values, None, group.block, fresh=False, reset_state=False
            )
        ]

    def state_dict(self) -> dict[str, Any]:
        state = {
            name: {k: (v.tolist() if torch.is_tensor(v) else v) for k, v in values.items()}
            for name, values in self.state.items()
        }
        return {"last_step": self.last_step, "units": state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._loaded = state
        if self.state:
            self._restore(state)

    def _restore(self, state: dict[str, Any]) -> None:
        self.last_step = state.get("last_step")
        for name, values in state.get("units", {}).items():
            if name not in self.state:
                continue
            for key, value in values.items():
                current = self.state[name][key]
                self.state[name][key] = torch.tensor(value, dtype=current.dtype) if torch.is_tensor(current) else value
        self._loaded = None


register_strategy(ContinualBackpropConfig, ContinualBackpropStrategy)
