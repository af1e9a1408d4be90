"""DASH: direction-aware shrinking (Shin et al., NeurIPS 2024).

Over a few downstream batches, accumulate G <- (1 - alpha) * G + alpha * (-grad). Then for every neuron (a Linear
row, or a Conv (out, in) kernel) shrink its weights by c = clamp(cos(w, G), lambda_min, 1): weights that point
where the downstream loss wants to go are kept, the others shrink (at most by ``lambda_min``). A bias vector (and,
with ``include_norm``, a norm's weight or bias vector) is one neuron: one cosine between the whole vector and its G.

Reference: baekrok/DASH-Direction-Aware-SHrinking ``utils/train_utils.py`` (``dash``). Where the library departs from
it, and why: docs/METHODS.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import PlasticityConfig
from ..core.data import downstream_loss, iter_batches
from ..core.plan import Plan, TensorReset
from ..core.targeting import Target, resolve_targets
from ..core.utilities import calibration_mode
from ..core.validators import check_number, check_positive_int
from .base import Strategy, register_strategy


@dataclass
class DashConfig(PlasticityConfig):
    """Direction-aware shrinking of the targeted Linear/Conv weights, once, on downstream batches.

    The report counts the shrunk entries as re-initialized (their optimizer state is reset too). ``lambda_min=1``
    changes nothing. The default, 0.3, is the paper's; before fine-tuning a pretrained network it shrank almost every
    weight and wrecked most of the benchmark's networks, and validation chose 0.9 or milder on 13 of its 20 pairs
    (docs/BENCHMARKS.md, version 2).

    Example:

    ```python
    >>> from hf_plasticity import DashConfig
    >>> DashConfig(lambda_min=0.3, alpha=0.3).requires_data
    True
    ```
    """

    strategy = "dash"
    requires_data = True

    lambda_min: float = field(
        default=0.3, metadata={"help": "lambda: the smallest shrink factor, in [0, 1] (1 changes nothing)."}
    )
    alpha: float = field(default=0.3, metadata={"help": "EMA rate of the negative-gradient direction G, in (0, 1]."})
    calibration_batches: int = field(default=8, metadata={"help": "Downstream batches accumulated into G."})
    calibration_batch_size: int = field(
        default=32, metadata={"help": "Rows per calibration batch when the data is a datasets.Dataset."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("lambda_min", self.lambda_min, low=0, high=1)
        check_number("alpha", self.alpha, low=0, high=1, low_open=True)
        check_positive_int("calibration_batches", self.calibration_batches)
        check_positive_int("calibration_batch_size", self.calibration_batch_size)


def neuron_view(tensor: torch.Tensor) -> torch.Tensor:
    """Rows = neurons: a Linear weight as is, a Conv weight as (out * in, kernel), a vector (a bias) as one row."""
    if tensor.dim() <= 1:
        return tensor.reshape(1, -1)
    if tensor.dim() == 2:
        return tensor
    return tensor.reshape(tensor.shape[0] * tensor.shape[1], -1)


class DashStrategy(Strategy):
    """Accumulates the negative-gradient direction and plans the per-neuron shrink."""

    redraws = False  # shrinks the old weights, draws nothing

    def directions(self, model: nn.Module, targets: list[Target], data: Any) -> dict[str, torch.Tensor]:
        alpha = self.config.alpha
        directions = {t.name: torch.zeros_like(t.tensor, dtype=torch.float32) for t in targets}
        with calibration_mode(model, targets):
            batches = iter_batches(data, self.config.calibration_batches, self.config.calibration_batch_size)
            for batch in batches:
                grads = torch.autograd.grad(
                    downstream_loss(model, batch), [t.tensor for t in targets], allow_unused=True
                )
                for target, grad in zip(targets, grads):
                    direction = directions[target.name].mul_(1 - alpha)
                    if grad is not None:
                        direction.sub_(alpha * grad.float())
        return directions

    def plan(self, model: nn.Module, *, data: Any = None) -> Plan:
        targets = resolve_targets(model, self.config)
        directions = self.directions(model, targets, data)
        plan: list[TensorReset] = []
        for target in targets:
            weight = target.tensor.detach().float()
            cosine = F.cosine_similarity(neuron_view(weight), neuron_view(directions.pop(target.name)), dim=1)
            factor = cosine.clamp(self.config.lambda_min, 1.0)
            shrunk = neuron_view(weight) * factor.unsqueeze(1)
            rows = torch.nonzero(factor < 1).reshape(-1)
            if rows.numel() == 0:
                continue
            width = neuron_view(weight).shape[1]
            index = (rows.unsqueeze(1) * width + torch.arange(width, device=rows.device)).reshape(-1)
            values = shrunk.reshape(-1)[index].to(target.tensor.dtype)
            plan.append(TensorReset(target.name, target.tensor, values, index, target.block))
        return Plan(plan)


register_strategy(DashConfig, DashStrategy)
