"""hf-plasticity: restore the plasticity of pretrained image classifiers before and during fine-tuning."""

from .architectures import (
    ARCHITECTURES,
    ArchitectureRule,
    ModelLayout,
    UnitPair,
    get_layout,
    register_architecture,
)
from .config import PlasticityConfig, available_strategies, get_config_class
from .controller import PlasticityController
from .diagnostics import DiagnosticsReport, LayerDiagnostics, diagnose
from .distributed import RankFailedError, ShardedModelError
from .hub import HubPushError, apply_card_section, push_restored, save_restored
from .param_groups import PartialRedrawError, plasticity_param_groups
from .pipeline import AlreadyRestoredError, prepare_pretrained
from .plan import Plan, TensorReset
from .record import restore_record
from .registry import StrategyRegistryError
from .report import PlasticityReport, TensorRecord
from .schedules import AtEpochs, EveryNSteps, EveryStep, Schedule
from .strategies import (
    AutoReinitConfig,
    ContinualBackpropConfig,
    DashConfig,
    LayerReinitConfig,
    ReDoConfig,
    RifleConfig,
    SelectiveReinitConfig,
    ShrinkPerturbConfig,
    Strategy,
    register_strategy,
    unregister_strategy,
)
from .targeting import ScopeError
from .units import UnitGroup, UnitMapError, unit_groups
from .unwrap import MetaDeviceError
from .version import __version__

# The Trainer integrations are imported on first use, so `import hf_plasticity` does not pull in the Trainer machinery.
_LAZY = {
    "PlasticityCallback": "callback",
    "ResumeMismatchError": "callback",
    "plasticity_optimizer": "trainer_optimizer",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    # restore
    "prepare_pretrained",
    "restore_record",
    "PlasticityReport",
    "TensorRecord",
    "AlreadyRestoredError",
    "MetaDeviceError",
    "ScopeError",
    # configs and strategies
    "PlasticityConfig",
    "LayerReinitConfig",
    "SelectiveReinitConfig",
    "ShrinkPerturbConfig",
    "ReDoConfig",
    "ContinualBackpropConfig",
    "DashConfig",
    "RifleConfig",
    "AutoReinitConfig",
    "Strategy",
    "Plan",
    "TensorReset",
    "Schedule",
    "EveryNSteps",
    "EveryStep",
    "AtEpochs",
    "register_strategy",
    "unregister_strategy",
    "StrategyRegistryError",
    "available_strategies",
    "get_config_class",
    # architectures and units
    "ARCHITECTURES",
    "ArchitectureRule",
    "UnitPair",
    "ModelLayout",
    "get_layout",
    "register_architecture",
    "UnitGroup",
    "UnitMapError",
    "unit_groups",
    # diagnostics
    "diagnose",
    "DiagnosticsReport",
    "LayerDiagnostics",
    # training
    "plasticity_param_groups",
    "plasticity_optimizer",
    "PartialRedrawError",
    "PlasticityCallback",
    "PlasticityController",
    "ResumeMismatchError",
    "ShardedModelError",
    "RankFailedError",
    # Hub
    "save_restored",
    "push_restored",
    "apply_card_section",
    "HubPushError",
    "__version__",
]
