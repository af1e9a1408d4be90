"""hf-plasticity: restore the plasticity of pretrained image classifiers before and during fine-tuning."""

from .core.architectures import (
    ArchitectureRule,
    LayoutError,
    ModelLayout,
    UnitPair,
    get_layout,
    register_architecture,
    registered_architectures,
)
from .core.collectives import RankFailedError, ShardedModelError
from .core.config import PlasticityConfig, available_strategies, get_config_class
from .core.data import CalibrationDataError
from .core.param_groups import PartialRedrawError, plasticity_param_groups
from .core.plan import Plan, TensorReset
from .core.recipe import FineTuneRecipe
from .core.record import PeriodicResets, RecordError, RestoreRecord, restore_record
from .core.registry import StrategyRegistryError
from .core.schedules import AtEpochs, EveryNSteps, EveryStep, Schedule
from .core.targeting import ScopeError
from .core.units import UnitGroup, UnitMapError, unit_groups
from .core.unwrap import MetaDeviceError
from .core.version import __version__
from .diagnostics.diagnose import DiagnosticsReport, LayerDiagnostics, diagnose
from .diagnostics.recipe import recommend_recipe
from .integrations.controller import PlasticityController
from .integrations.hub import HubPushError, apply_card_section, push_restored, save_restored
from .integrations.hub_http import PushDeadlineError
from .pipeline.report import PlasticityReport, TensorRecord
from .pipeline.restore import AlreadyRestoredError, prepare_pretrained
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

# The Trainer integrations are imported on first use, so `import hf_plasticity` does not pull in the Trainer machinery.
_LAZY = {
    "PlasticityCallback": "integrations.callback",
    "PlasticityTrainer": "integrations.trainer",
    "PlasticityTrainerMixin": "integrations.trainer",
    "ResumeMismatchError": "integrations.callback",
    "plasticity_optimizer": "integrations.trainer_optimizer",
    "compare": "cli.compare",
    "ComparisonInputError": "comparison.splits",
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
    "RestoreRecord",
    "PeriodicResets",
    "RecordError",
    "PlasticityReport",
    "TensorRecord",
    "AlreadyRestoredError",
    "CalibrationDataError",
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
    "ArchitectureRule",
    "UnitPair",
    "ModelLayout",
    "LayoutError",
    "get_layout",
    "register_architecture",
    "registered_architectures",
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
    # the learning rates from one diagnostic pass (experimental)
    "recommend_recipe",
    "FineTuneRecipe",
    "PlasticityCallback",
    "PlasticityTrainer",
    "PlasticityTrainerMixin",
    "PlasticityController",
    "ResumeMismatchError",
    "ShardedModelError",
    "RankFailedError",
    # does it help on my data?
    "compare",
    "ComparisonInputError",
    # Hub
    "save_restored",
    "push_restored",
    "apply_card_section",
    "HubPushError",
    "PushDeadlineError",
    "__version__",
]
