"""hf-plasticity: restore the plasticity of pretrained image classifiers before and during fine-tuning."""

__version__ = "0.1.0"

from .architectures import ARCHITECTURES, ArchitectureRule, ModelLayout, get_layout  # noqa: E402
from .config import PlasticityConfig, available_strategies, get_config_class  # noqa: E402
from .engine import AlreadyRestoredError, prepare_pretrained, restore_record  # noqa: E402
from .report import PlasticityReport, TensorRecord  # noqa: E402
from .strategies import (  # noqa: E402
    LayerReinitConfig,
    SelectiveReinitConfig,
    Strategy,
    TensorReset,
    register_strategy,
)
from .targeting import ScopeError  # noqa: E402

__all__ = [
    "ARCHITECTURES",
    "AlreadyRestoredError",
    "ArchitectureRule",
    "LayerReinitConfig",
    "ModelLayout",
    "PlasticityConfig",
    "PlasticityReport",
    "ScopeError",
    "SelectiveReinitConfig",
    "Strategy",
    "TensorRecord",
    "TensorReset",
    "__version__",
    "available_strategies",
    "get_config_class",
    "get_layout",
    "prepare_pretrained",
    "restore_record",
    "register_strategy",
]
