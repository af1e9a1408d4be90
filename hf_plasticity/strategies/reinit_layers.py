"""Layer re-initialization: the last ``num_blocks`` blocks of the backbone (plus the final norm), entirely.

By default ``num_blocks`` scales with depth: an eighth of the backbone's blocks, at least one (2 of
EfficientNet-Lite0's 16 MBConv blocks, 1 of ViT-B/16's 12 layers). That is what the benchmark measured best
(docs/BENCHMARKS.md): the last two of 16 blocks beat the last one on EfficientNet-Lite0, and the last one of 4 beat
the last two on a small ResNet, where two blocks are half the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..architectures import get_layout
from ..config import PlasticityConfig, check_positive_int
from ..init import derive_seed, fresh_tensors
from ..targeting import resolve_block_modules
from .base import Strategy, TensorReset, register_strategy


@dataclass
class LayerReinitConfig(PlasticityConfig):
    """Re-initialize the last ``num_blocks`` backbone blocks with the model's own init rule (Zhang et al., 2021).

    Every parameter and buffer of those blocks is re-drawn (layer scale, GRN and BatchNorm statistics included),
    and the final norm after the last block too when the architecture has one. ``exclude_modules`` removes blocks;
    the other scope fields do not apply (whole blocks are the unit). With ``num_blocks=None`` (the default) the
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

    def __init__(self, config: PlasticityConfig) -> None:
        super().__init__(config)
        self.decision: dict[str, Any] = {}

    def plan(self, model: nn.Module, *, data: Any = None) -> list[TensorReset]:
        layout = get_layout(model)
        num_blocks = self.config.num_blocks
        if num_blocks is None:
            num_blocks = depth_share_of_blocks(len(layout.blocks))
            self.decision = {"num_blocks": num_blocks}
        plan: list[TensorReset] = []
        for module_name in resolve_block_modules(model, self.config, num_blocks):
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

    def details(self) -> dict[str, Any]:
        return dict(self.decision)


register_strategy(LayerReinitConfig, LayerReinitStrategy)
