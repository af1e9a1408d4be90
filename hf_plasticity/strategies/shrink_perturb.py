"""Shrink & Perturb (Ash & Adams, NeurIPS 2020): w <- shrink * w + perturb * fresh(w), tensor by tensor.

Reference: JordanAsh/warm_start ``run.py`` (``shrink_perturb``), which mixes every parameter of the network with the
same parameter of a freshly initialized copy and returns that copy (so its BatchNorm running statistics are the
fresh ones). Here the noise is a fresh draw from each layer's own init rule (the model's ``_init_weights``), made one
module at a time: a second copy of the whole model is never built. Where the library departs from the reference, and
why: docs/METHODS.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..core.config import PlasticityConfig
from ..core.init import derive_seed, fresh_tensors
from ..core.plan import Plan, TensorReset
from ..core.targeting import Target, resolve_every_tensor, resolve_targets
from ..core.validators import check_flag, check_number
from .base import Strategy, register_strategy


@dataclass
class ShrinkPerturbConfig(PlasticityConfig):
    """Shrink every targeted tensor towards zero and add a fresh draw of its own init rule.

    The published defaults are ``shrink=0.4, perturb=0.1``; for ImageNet transfer a milder shrink helps: a first
    calibration with an ImageNet CNN (EfficientNet-Lite0 on digits) gained with ``shrink=0.8, perturb=0.1``.
    ``shrink=1.0, perturb=0.0`` changes nothing.

    What is covered, exactly: by default the weights of the backbone's Linear/Conv layers, as for every strategy;
    ``include_bias=True`` adds their biases and ``include_norm=True`` the weights and biases of the norm layers.
    Other parameters (ViT's ``cls_token`` and ``position_embeddings``, ConvNeXt's ``layer_scale_parameter``,
    ConvNeXtV2's GRN) are covered only by ``every_parameter=True``, which is the paper's setting: every parameter
    outside the head, and the BatchNorm running statistics set to the fresh network's (0 and 1, re-estimated from
    the calibration data when there is any). The classification head is never touched (it is new in fine-tuning; the
    paper, which warm-starts the same task, shrinks it too).

    Example:

    ```python
    >>> from hf_plasticity import ShrinkPerturbConfig
    >>> ShrinkPerturbConfig(shrink=0.8, perturb=0.1).strategy
    'shrink_perturb'
    ```
    """

    strategy = "shrink_perturb"

    shrink: float = field(default=0.4, metadata={"help": "lambda: factor on the current weights, in [0, 1]."})
    perturb: float = field(
        default=0.1, metadata={"help": "sigma: factor on the fresh draw from the layer's init rule, >= 0."}
    )
    every_parameter: bool = field(
        default=False,
        metadata={
            "help": "Every parameter outside the head (embeddings, cls_token, position embeddings, layer scale, "
            "norms, biases), and fresh BatchNorm running statistics, as in the paper; False: the scope fields decide."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("shrink", self.shrink, low=0, high=1)
        check_number("perturb", self.perturb, low=0)
        check_flag("every_parameter", self.every_parameter)


class ShrinkPerturbStrategy(Strategy):
    """Plans ``shrink * w + perturb * fresh(w)`` for every targeted tensor, one module's fresh draw at a time."""

    redraws = False  # the new values keep `shrink` of the old ones

    def validate(self, model: nn.Module) -> None:
        self._targets(model)

    def _targets(self, model: nn.Module) -> list[Target]:
        if self.config.every_parameter:
            return resolve_every_tensor(model, self.config)
        return resolve_targets(model, self.config)

    def plan(self, model: nn.Module, *, data: Any = None) -> Plan:
        config = self.config
        plan: list[TensorReset] = []
        fresh: dict[str, Any] = {}
        current = None
        parameters = {id(p) for p in model.parameters()}
        for target in self._targets(model):
            if target.module_name != current:  # targets come in model order: one fresh module alive at a time
                current = target.module_name
                module = model.get_submodule(current)
                fresh = fresh_tensors(model, module, seed=derive_seed(config.seed, current))
            if id(target.tensor) not in parameters:  # a running statistic: the fresh network's, as in the paper
                plan.append(TensorReset(target.name, target.tensor, fresh[target.attr].clone(), None, target.block))
                continue
            weight = target.tensor.detach().float()
            values = (config.shrink * weight + config.perturb * fresh[target.attr].float()).to(target.tensor.dtype)
            plan.append(TensorReset(target.name, target.tensor, values, None, target.block))
        return Plan(plan)


register_strategy(ShrinkPerturbConfig, ShrinkPerturbStrategy)
