"""hf-plasticity: restore the plasticity of pretrained image classifiers before and during fine-tuning."""

__version__ = "0.1.0"

# isort: off
from .architectures import ARCHITECTURES, ArchitectureRule, ModelLayout, get_layout  # noqa: E402
from .config import PlasticityConfig, available_strategies, get_config_class  # noqa: E402
from .controller import PlasticityController  # noqa: E402
from .diagnostics import DiagnosticsReport, LayerDiagnostics, diagnose  # noqa: E402
from .distributed import ShardedModelError  # noqa: E402
from .engine import AlreadyRestoredError, prepare_pretrained, restore_record  # noqa: E402
from .hub import HubPushError, apply_card_section, push_restored, save_restored  # noqa: E402
from .report import PlasticityReport, TensorRecord  # noqa: E402
from .strategies import (  # noqa: E402
    AutoReinitConfig,
    ContinualBackpropConfig,
    DashConfig,
    LayerReinitConfig,
    ReDoConfig,
    RifleConfig,
    SelectiveReinitConfig,
    ShrinkPerturbConfig,
    Strategy,
    TensorReset,
    register_strategy,
)
from .targeting import ScopeError  # noqa: E402
from .units import UnitGroup, UnitMapError, unit_groups  # noqa: E402
# isort: on

# The Trainer callback is imported on first use, so `import hf_plasticity` does not pull in the Trainer machinery.
_LAZY = {"PlasticityCallback": "callback", "ResumeMismatchError": "callback"}


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
    "TensorReset",
    "register_strategy",
    "available_strategies",
    "get_config_class",
    # architectures and units
    "ARCHITECTURES",
    "ArchitectureRule",
    "ModelLayout",
    "get_layout",
    "UnitGroup",
    "UnitMapError",
    "unit_groups",
    # diagnostics
    "diagnose",
    "DiagnosticsReport",
    "LayerDiagnostics",
    # training
    "PlasticityCallback",
    "PlasticityController",
    "ResumeMismatchError",
    "ShardedModelError",
    # Hub
    "save_restored",
    "push_restored",
    "apply_card_section",
    "HubPushError",
    "__version__",
]
