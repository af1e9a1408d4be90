"""Layer re-initialization: the last ``num_blocks`` blocks of the backbone (plus the final norm), entirely."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..architectures import get_layout
from ..config import PlasticityConfig
from ..init import derive_seed, fresh_tensors
from ..targeting import resolve_block_modules
from .base import Strategy, TensorReset, register_strategy


@dataclass
class LayerReinitConfig(PlasticityConfig):
    """Re-initialize the last ``num_blocks`` backbone blocks with the model's own init rule (Zhang et al., 2021).

    Every parameter and buffer of those blocks is re-drawn (layer scale, GRN and BatchNorm statistics included),
    and the final norm after the last block too when the architecture has one. ``exclude_modules`` removes blocks;
    the other scope fields do not apply (whole blocks are the unit).

    Example:

    ```python
    >>> from hf_plasticity import LayerReinitConfig
    >>> LayerReinitConfig(num_blocks=2).strategy
    'reinit_layers'
    ```
    """

    strategy = "reinit_layers"

    num_blocks: int = field(default=1, metadata={"help": "How many of the last backbone blocks to re-initialize."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.num_blocks, int) or self.num_blocks < 1:
            raise ValueError(f"`num_blocks` must be a positive integer, got {self.num_blocks!r}.")


class LayerReinitStrategy(Strategy):
    """Plans fresh values for every tensor of the last ``num_blocks`` blocks."""

    def plan(self, model: nn.Module, *, data: Any = None) -> list[TensorReset]:
        layout = get_layout(model)
        plan: list[TensorReset] = []
        for module_name in resolve_block_modules(model, self.config, self.config.num_blocks):
            module = model.get_submodule(module_name)
            fresh = fresh_tensors(model, module, seed=derive_seed(self.config.seed, module_name))
            originals = dict(module.named_parameters())
            originals.update(dict(module.named_buffers()))
            for name, tensor in originals.items():
                plan.append(
                    TensorReset(
                        name=f"{module_name}.{name}",
                        tensor=tensor,
                        values=fresh[name],
                        block=layout.block_of(module_name),
                    )
                )
        return plan


register_strategy(LayerReinitConfig, LayerReinitStrategy)
