"""Restoration strategies: one module per strategy, each registering its config and strategy classes."""

from .base import Strategy, TensorReset, get_strategy, register_strategy
from .reinit_layers import LayerReinitConfig, LayerReinitStrategy
from .selective import SelectiveReinitConfig, SelectiveReinitStrategy

__all__ = [
    "LayerReinitConfig",
    "LayerReinitStrategy",
    "SelectiveReinitConfig",
    "SelectiveReinitStrategy",
    "Strategy",
    "TensorReset",
    "get_strategy",
    "register_strategy",
]
