"""Layer re-initialization: the last ``num_blocks`` blocks of the backbone (plus the final norm), entirely.

By default ``num_blocks`` scales with depth: an eighth of the backbone's blocks, at least one (2 of
EfficientNet-Lite0's 16 MBConv blocks, 1 of ViT-B/16's 12 layers). That is the block count version 1 of the benchmark
measured best (docs/BENCHMARKS.md): the last two of 16 blocks beat the last one on EfficientNet-Lite0, and the last
one of 4 beat the last two on a small ResNet, where two blocks are half the network. Version 2, with every learning
rate tuned on validation, found that this restore does not raise final accuracy over tuned standard fine-tuning; it
makes short fine-tuning less sensitive to the learning rate, on CNNs above all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.architectures import get_layout
from ..core.config import PlasticityConfig
from ..core.init import derive_seed, fresh_tensors
from ..core.plan import Plan, TensorReset
from ..core.targeting import excluded, frozen_tensors, resolve_block_modules
from ..core.validators import check_number, check_positive_int
from .base import Strategy, register_strategy

#: What a re-drawn block's layer scale (ConvNeXt's ``layer_scale_parameter``, any parameter under a ``layer_scale``
#: name) starts from: ``"init"`` the init rule's value (``layer_scale_init_value``, 1e-6 in the public ConvNeXt
#: checkpoints: the fresh block starts muted, its weights' gradients scaled by 1e-6), ``"keep"`` the pretrained values,
#: or a number. The default is "init": on `convnext_tiny` (10 seeds, each choice tuned on validation) "keep" lost
#: 0.65 points to it on digits and won 0.93 on textures, 0.1 lost 1.52 and won 0.73 (docs/BENCHMARKS.md, "ConvNeXt's
#: layer scale").
LAYER_SCALE_CHOICES = ("init", "keep")


@dataclass
class BlockReinitConfig(PlasticityConfig):
    """Fields of the strategies that re-draw whole blocks (`LayerReinitConfig`, `AutoReinitConfig`)."""

    unused_scope_fields = ("target_modules", "last_k_blocks", "include_bias", "include_norm")

    layer_scale: str | float = field(
        default="init",
        metadata={
            "help": "What a re-drawn block's layer scale (ConvNeXt) starts from: 'init' (the init rule's "
            "layer_scale_init_value, 1e-6 in the public checkpoints: the block starts muted), 'keep' (the pretrained "
            "values), or a number > 0."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        value = self.layer_scale
        if isinstance(value, str) and value in LAYER_SCALE_CHOICES:
            return
        try:
            check_number("layer_scale", value, low=0, low_open=True)
        except ValueError as error:
            raise ValueError(f"`layer_scale` must be 'init', 'keep' or a finite number > 0, got {value!r}.") from error


@dataclass
class LayerReinitConfig(BlockReinitConfig):
    """Re-initialize the last ``num_blocks`` backbone blocks with the model's own init rule (Zhang et al., 2021).

    Every parameter and buffer of those blocks is re-drawn (GRN and BatchNorm statistics included; the layer scale
    as ``layer_scale`` says), and the final norm after the last block too when the architecture has one.
    ``exclude_modules`` removes blocks; ``target_modules``, ``last_k_blocks``, ``include_bias`` and ``include_norm``
    do not apply (whole blocks are the unit) and are refused. With ``num_blocks=None`` (the default) the
    count is an eighth of the backbone's blocks, at least one; the count used is in ``report.details``.

    Example:

    ```python
    >>> from hf_plasticity import LayerReinitConfig
    >>> LayerReinitConfig(num_blocks=2).strategy
    'reinit_layers'
    ```
    """

    strategy = "reinit_layers"

    num_blocks: int | None = field(
        default=None,
        metadata={
            "help": "How many of the last backbone blocks to re-initialize; None: an eighth of the backbone's "
            "blocks, at least one."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int("num_blocks", self.num_blocks, allow_none=True)


def depth_share_of_blocks(total_blocks: int) -> int:
    """The default number of late blocks to re-initialize: an eighth of ``total_blocks``, at least one.

    Example:

    ```python
    >>> [depth_share_of_blocks(n) for n in (4, 12, 16, 18)]
    [1, 1, 2, 2]
    ```
    """
    return max(1, total_blocks // 8)


class LayerReinitStrategy(Strategy):
    """Plans fresh values for every tensor of the last ``num_blocks`` blocks."""

    def num_blocks(self, model: nn.Module) -> int:
        """The configured count, or the default share of the model's blocks."""
        if self.config.num_blocks is not None:
            return self.config.num_blocks
        return depth_share_of_blocks(len(get_layout(model).blocks))

    def validate(self, model: nn.Module) -> None:
        resolve_block_modules(model, self.config, self.num_blocks(model))

    def plan(self, model: nn.Module, *, data: Any = None) -> Plan:
        num_blocks = self.num_blocks(model)
        details = {"num_blocks": num_blocks} if self.config.num_blocks is None else {}
        return Plan(plan_block_reinit(model, num_blocks, self.config), details)


def is_layer_scale(name: str) -> bool:
    """Whether tensor ``name`` is a layer scale (ConvNeXt ``layer_scale_parameter``, DINOv2 ``layer_scale1.*``)."""
    return "layer_scale" in name


def _layer_scale_values(tensor: torch.Tensor, value: float, name: str) -> torch.Tensor:
    """``tensor`` filled with ``value``, refused (naming ``layer_scale``, the tensor and its dtype's range) when the
    dtype cannot hold it: the plan fails before anything is written."""
    largest = torch.finfo(tensor.dtype).max
    if value > largest:
        raise ValueError(
            f"`layer_scale`={value:g} does not fit {name} ({tensor.dtype}, at most {largest:g}): give a value "
            "within its range, 'init' or 'keep'."
        )
    return torch.full_like(tensor, value)


def plan_block_reinit(model: nn.Module, num_blocks: int, config: BlockReinitConfig) -> list[TensorReset]:
    """Fresh values, with the model's own init rule, for every parameter and buffer of the last ``num_blocks``
    blocks and the final norm (``config.exclude_modules``, ``config.layer_scale`` and ``config.seed`` apply)."""
    layout = get_layout(model)
    resets: list[TensorReset] = []
    for module_name in resolve_block_modules(model, config, num_blocks):
        module = model.get_submodule(module_name)
        fresh = fresh_tensors(model, module, seed=derive_seed(config.seed, module_name))
        originals = dict(module.named_parameters())
        originals.update(dict(module.named_buffers()))
        skipped = frozen_tensors(module)  # a frozen layer stays as the user froze it
        for name, tensor in originals.items():
            owner = f"{module_name}.{name}".rsplit(".", 1)[0]
            if name in skipped or excluded(owner, config.exclude_modules):  # excluded inside the block
                continue
            values = fresh[name]
            if is_layer_scale(name):
                if config.layer_scale == "keep":
                    continue
                if config.layer_scale != "init":
                    values = _layer_scale_values(tensor, float(config.layer_scale), f"{module_name}.{name}")
            resets.append(TensorReset(f"{module_name}.{name}", tensor, values, block=layout.block_of(module_name)))
    return resets


register_strategy(LayerReinitConfig, LayerReinitStrategy)
