"""A small periodic strategy for the callback and distributed tests, so they do not depend on the real periodic
strategies: every ``every_n_steps`` steps it re-draws a few random entries of each backbone Linear/Conv weight
(optionally "scoring" on data first: the entries then depend on the labels it reads, so processes that read different
shards would plan differently unless the plan is shared)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hf_plasticity import (
    EveryNSteps,
    Plan,
    PlasticityConfig,
    Strategy,
    TensorReset,
    register_strategy,
    unregister_strategy,
)
from hf_plasticity.core.data import iter_batches
from hf_plasticity.core.init import derive_seed
from hf_plasticity.core.schedules import Schedule
from hf_plasticity.core.targeting import resolve_targets

NAME = "test_every_n"


@dataclass
class EveryNConfig(PlasticityConfig):
    strategy = NAME

    every_n_steps: int = field(default=2, metadata={"help": "Period in optimizer steps."})
    fraction: float = field(default=0.05, metadata={"help": "Share of each weight re-drawn."})
    scored: bool = field(default=False, metadata={"help": "Pick the entries from the calibration labels."})
    at_start: bool = field(default=False, metadata={"help": "Also act once before training (one-shot)."})
    calibration_batches: int = field(default=2, metadata={"help": "Batches read when `scored`."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.every_n_steps, bool) or not isinstance(self.every_n_steps, int) or self.every_n_steps < 1:
            raise ValueError(f"`every_n_steps` must be a positive integer, got {self.every_n_steps!r}.")

    @property
    def requires_data(self) -> bool:  # type: ignore[override]
        return self.scored


class EveryNStrategy(Strategy):
    def __init__(self, config: EveryNConfig) -> None:
        super().__init__(config)
        self.steps: list[int] = []
        self.batches_seen: list[int] = []

    def make_schedule(self) -> Schedule:
        return EveryNSteps(n=self.config.every_n_steps, before_training=self.config.at_start)

    def plan(self, model: nn.Module, *, data: Any = None) -> Plan:
        return self._plan(model, step=0, data=data)

    def plan_step(self, model: nn.Module, *, step: int, data: Any = None) -> Plan:
        plan = self._plan(model, step=step, data=data)
        self.steps.append(step)
        return plan

    def _plan(self, model: nn.Module, *, step: int, data: Any) -> Plan:
        salt, details = "", {}
        if self.config.scored:
            batches = list(iter_batches(data, self.config.calibration_batches))
            self.batches_seen.append(len(batches))
            salt = str(sum(int(labels.sum()) for _, labels in batches))
            details = {"label_sum": salt}
        plan = []
        for target in resolve_targets(model, self.config):
            generator = torch.Generator().manual_seed(derive_seed(self.config.seed, target.name, str(step), salt))
            numel = target.tensor.numel()
            count = max(1, int(self.config.fraction * numel))
            index = torch.randperm(numel, generator=generator)[:count]
            values = 0.02 * torch.randn(count, generator=generator)
            plan.append(TensorReset(target.name, target.tensor, values, index, target.block))
        return Plan(plan, details)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "steps": list(self.steps)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.steps = list(state.get("steps", []))


def register() -> None:
    register_strategy(EveryNConfig, EveryNStrategy)


def unregister() -> None:
    unregister_strategy(NAME)
