"""``"auto"``: read [`diagnose`] on the user's data, then re-initialize as many late blocks as look saturated.

The saturated signature is the one the paper names: weights whose downstream gradient is insignificant. Per backbone
block, the share of Linear/Conv weight entries with an insignificant gradient (|g| <= ``insignificant`` x the
network's mean |g|, the new head attached) is measured on a few calibration batches. The blocks of the later half of
the backbone whose share reaches ``saturation`` are counted, and the last ``min(count, max_blocks)`` blocks are
re-initialized as [`LayerReinitConfig`] does. When no late block is saturated (in-domain data), nothing is written.

The thresholds come from the benchmark (docs/BENCHMARKS.md, "The auto strategy"), where they were calibrated on
EfficientNet-Lite0: an atypical target (digits, textures) puts 0.70-0.72 of the weights of its late blocks below
the threshold, the in-domain control (photo crops) 0.55-0.61.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..architectures import get_layout
from ..config import PlasticityConfig
from .base import Strategy, TensorReset, register_strategy
from .reinit_layers import LayerReinitConfig, LayerReinitStrategy


@dataclass
class AutoReinitConfig(PlasticityConfig):
    """Chooses how many late blocks to re-initialize from the diagnostics of the model on downstream data.

    Needs ``data=``. The choice (per-block insignificant-gradient shares, the saturated blocks, the number of
    blocks re-initialized) is in ``report.details`` and in the record saved with the model.

    Example:

    ```python
    >>> from hf_plasticity import AutoReinitConfig
    >>> AutoReinitConfig().strategy, AutoReinitConfig().max_blocks
    ('auto', 2)
    ```
    """

    strategy = "auto"
    requires_data = True

    max_blocks: int = field(default=2, metadata={"help": "The most late blocks re-initialized."})
    saturation: float = field(
        default=0.65,
        metadata={
            "help": "A block is saturated when at least this share of its weight entries gets an insignificant "
            "gradient on the downstream data."
        },
    )
    insignificant: float = field(
        default=0.01, metadata={"help": "A gradient entry is insignificant when |g| <= this x the network's mean |g|."}
    )
    calibration_batches: int = field(default=8, metadata={"help": "Calibration batches read by the diagnostics."})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("max_blocks", "calibration_batches"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        for name in ("saturation", "insignificant"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise ValueError(f"`{name}` must be a number in (0, 1], got {value!r}.")


def block_insignificant_shares(report: Any, num_blocks: int) -> list[float | None]:
    """Per backbone block, the share of its Linear/Conv weight entries whose gradient is insignificant.

    Args:
        report: a [`DiagnosticsReport`].
        num_blocks: number of backbone blocks.

    Returns:
        One share per block, in depth order (None for a block without Linear/Conv weights).
    """
    entries = [0] * num_blocks
    insignificant = [0.0] * num_blocks
    for layer in report.layers:
        if layer.block is None:
            continue
        entries[layer.block] += layer.numel
        insignificant[layer.block] += layer.insignificant_grad_share * layer.numel
    return [s / n if n else None for s, n in zip(insignificant, entries)]


class AutoReinitStrategy(Strategy):
    """Diagnoses the model on ``data``, then plans the re-initialization of the saturated late blocks."""

    def __init__(self, config: PlasticityConfig) -> None:
        super().__init__(config)
        self.decision: dict[str, Any] = {}

    def plan(self, model: nn.Module, *, data: Any = None) -> list[TensorReset]:
        from ..diagnostics import diagnose

        config = self.config
        layout = get_layout(model)
        report = diagnose(model, data, batches=config.calibration_batches, insignificant=config.insignificant)
        shares = block_insignificant_shares(report, len(layout.blocks))
        late = range(len(layout.blocks) // 2, len(layout.blocks))
        saturated = [b for b in late if shares[b] is not None and shares[b] >= config.saturation]
        num_blocks = min(len(saturated), config.max_blocks)
        self.decision = {
            "num_blocks": num_blocks,
            "saturated_blocks": saturated,
            "block_insignificant_share": [None if s is None else round(s, 4) for s in shares],
            "samples": report.samples,
        }
        if num_blocks == 0:
            return []
        layer_config = LayerReinitConfig(
            num_blocks=num_blocks, exclude_modules=config.exclude_modules, seed=config.seed
        )
        return LayerReinitStrategy(layer_config).plan(model)

    def details(self) -> dict[str, Any]:
        return dict(self.decision)


register_strategy(AutoReinitConfig, AutoReinitStrategy)
