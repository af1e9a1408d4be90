"""Restoration strategies: one module per strategy, each registering its config and strategy classes."""

from .auto import AutoReinitConfig, AutoReinitStrategy
from .base import StepSaltedStrategy, Strategy, get_strategy, register_strategy, unregister_strategy
from .cbp import ContinualBackpropConfig, ContinualBackpropStrategy
from .dash import DashConfig, DashStrategy
from .redo import ReDoConfig, ReDoStrategy
from .reinit_layers import LayerReinitConfig, LayerReinitStrategy
from .rifle import RifleConfig, RifleStrategy
from .selective import SelectiveReinitConfig, SelectiveReinitStrategy
from .shrink_perturb import ShrinkPerturbConfig, ShrinkPerturbStrategy

__all__ = [
    "AutoReinitConfig",
    "AutoReinitStrategy",
    "ContinualBackpropConfig",
    "ContinualBackpropStrategy",
    "DashConfig",
    "DashStrategy",
    "LayerReinitConfig",
    "LayerReinitStrategy",
    "ReDoConfig",
    "ReDoStrategy",
    "RifleConfig",
    "RifleStrategy",
    "SelectiveReinitConfig",
    "SelectiveReinitStrategy",
    "ShrinkPerturbConfig",
    "ShrinkPerturbStrategy",
    "StepSaltedStrategy",
    "Strategy",
    "get_strategy",
    "register_strategy",
    "unregister_strategy",
]
