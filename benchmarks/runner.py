"""Run the benchmark grid (model x target x seed x backbone lr x arm), one JSON file per finished run.

Runs are resumable: a run whose JSON exists is skipped, so an interrupted bench picks up where it stopped and a
later call with more arms or seeds only runs what is new. An arm whose strategy the library does not provide is
skipped with a warning (and runs on a later call once it exists).

A small model pretrained here must be really pretrained: before anything runs on it, its recorded source accuracy is
checked ([`require_pretrained_source`]) and the bench refuses a model below the threshold. Each run records the
check, and the report refuses runs whose record does not show a passing one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from hf_plasticity.core.validators import check_number, check_positive_int

from .arms import Arm, get_arms
from .data import TARGETS, as_tensors, load_target
from .models import (
    PretrainConfig,
    cache_path,
    get_spec,
    is_source_pretrained,
    load_model,
    pretrain_recipe,
    require_pretrained_source,
)
from .train import FineTuneConfig, epoch_order, fine_tune, recalibrate_batchnorm, reset_batchnorm_names

logger = logging.getLogger(__name__)


@dataclass
class BenchSettings:
    """What to run and with which recipe.

    Args:
        models (`list[str]`): bench model names (see `MODEL_SPECS`).
        targets (`list[str]`, *optional*): downstream targets (see `TARGETS`); when empty, each model gets the
            atypical targets plus its own in-domain control (`ModelSpec.default_targets`).
        arms (`list[str]`, *optional*): arm names (see `ARMS`); all arms when empty. `"standard"` is always run.
        backbone_lrs (`list[float]`, *optional*, defaults to `[1e-4, 3e-4, 1e-3]`): the backbone learning-rate grid.
        head_lr (`float`, *optional*, defaults to 1e-3): the head learning rate.
        seeds (`int`, *optional*, defaults to 3): seeds `0 .. seeds-1` (head draw, restore, data order, dropout).
        epochs (`int`, *optional*, defaults to 8): fine-tuning epochs.
        batch_size (`int`, *optional*, defaults to 32): training batch size.
        calibration_batches (`int`, *optional*, defaults to 8): training batches handed to the restore as `data`.
        max_train (`int`, *optional*): cut every target's training split to this many examples.
        max_test (`int`, *optional*): cut every target's test split to this many examples.
        image_size (`int`, *optional*): override the models' input size.
        threads (`int`, *optional*, defaults to 1): `torch.set_num_threads`.
        output_dir (`str`, *optional*, defaults to `"bench_runs"`): where run JSONs, tables and plots go.
        cache_dir (`str`, *optional*): cache of the source-pretrained models (default `~/.cache/hf_plasticity/bench`).
        pretrain ([`PretrainConfig`], *optional*): one source-pretraining recipe for every small model (default: each
            model's registered recipe, `PRETRAIN_RECIPES`).
        pretrain_epochs (`int`, *optional*): replace the epochs of the source-pretraining recipes.
    """

    models: list[str]
    targets: list[str] = field(default_factory=list)
    arms: list[str] = field(default_factory=list)
    backbone_lrs: list[float] = field(default_factory=lambda: [1e-4, 3e-4, 1e-3])
    head_lr: float = 1e-3
    seeds: int = 3
    epochs: int = 8
    batch_size: int = 32
    calibration_batches: int = 8
    max_train: int | None = None
    max_test: int | None = None
    image_size: int | None = None
    threads: int = 1
    output_dir: str = "bench_runs"
    cache_dir: str | None = None
    pretrain: PretrainConfig | None = None
    pretrain_epochs: int | None = None

    def validate(self) -> None:
        """Raises a `ValueError` naming the first unknown model, target or arm, or out-of-range value, before anything
        is written or loaded."""
        for model in self.models:
            get_spec(model)
        unknown = [name for name in self.targets if name not in TARGETS]
        if unknown:
            raise ValueError(f"Unknown target(s) {unknown}; accepted values: {sorted(TARGETS)}.")
        get_arms(self.arms)
        if not self.backbone_lrs:
            raise ValueError("`backbone_lrs` must name at least one learning rate.")
        for lr in self.backbone_lrs:
            check_number("backbone_lrs", lr, low=0, low_open=True)
        check_number("head_lr", self.head_lr, low=0, low_open=True)
        for name in ("seeds", "epochs", "batch_size", "calibration_batches", "threads"):
            check_positive_int(name, getattr(self, name))
        for name in ("max_train", "max_test", "image_size", "pretrain_epochs"):
            check_positive_int(name, getattr(self, name), allow_none=True)

    def pretrain_for(self, model: str) -> PretrainConfig:
        """The source-pretraining recipe of a small model under these settings."""
        return pretrain_recipe(model, self.pretrain, self.pretrain_epochs)

    def source_cache(self, model: str) -> str | None:
        """Name of the cached source checkpoint of a small model (part of its runs' identity); None for published
        pretrained models."""
        if not is_source_pretrained(model):
            return None
        return cache_path(get_spec(model), self.pretrain_for(model), self.cache_dir).name

    def recipe(self) -> dict[str, Any]:
        """The settings every run of one grid shares (part of each run's identity)."""
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "head_lr": self.head_lr,
            "calibration_batches": self.calibration_batches,
            "max_train": self.max_train,
            "max_test": self.max_test,
            "image_size": self.image_size,
        }


@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid."""

    model: str
    target: str
    arm: Arm
    backbone_lr: float
    seed: int

    def run_id(self, recipe: dict[str, Any], source: str | None = None) -> str:
        """File-name-safe identity of the run: readable fields plus a short hash of the recipe, the model spec and,
        for a model pretrained here, its source checkpoint (`source`: the cache folder's name)."""
        key = {**recipe, "model_spec": asdict(get_spec(self.model))}
        if source is not None:
            key["source"] = source
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:6]
        return f"{self.model}__{self.target}__{self.arm.name}__blr{self.backbone_lr:g}__seed{self.seed}__{digest}"


def runs_dir(output_dir: str | os.PathLike) -> Path:
    """Folder of the per-run JSON files."""
    return Path(output_dir) / "runs"


def plan(settings: BenchSettings) -> list[RunSpec]:
    """The grid in execution order: model, target, seed, learning rate, arm (so early seeds finish first)."""
    arms = get_arms(settings.arms)
    return [
        RunSpec(model, target, arm, lr, seed)
        for model in settings.models
        for target in (settings.targets or get_spec(model).default_targets)
        for seed in range(settings.seeds)
        for lr in settings.backbone_lrs
        for arm in arms
    ]


def calibration_data(
    train: tuple[torch.Tensor, torch.Tensor], num_batches: int, batch_size: int, seed: int
) -> list[dict[str, torch.Tensor]]:
    """The first `num_batches` training batches of a seeded order, as dicts the library's `data` accepts."""
    images, labels = train
    order = epoch_order(len(labels), seed, epoch=-1)
    batches = []
    for b in range(num_batches):
        idx = order[b * batch_size : (b + 1) * batch_size]
        if len(idx) == 0:
            break
        batches.append({"pixel_values": images[idx], "labels": labels[idx]})
    return batches


def run_one(
    spec: RunSpec,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    settings: BenchSettings,
) -> dict[str, Any]:
    """Load the model, restore it with the arm's strategy (if any), fine-tune, and return the run's record."""
    start = time.perf_counter()
    num_labels = int(torch.cat([train[1], test[1]]).max().item()) + 1
    config = spec.arm.build_config(spec.seed)
    pretrain = settings.pretrain_for(spec.model) if is_source_pretrained(spec.model) else None
    model = load_model(spec.model, num_labels, seed=spec.seed, cache_dir=settings.cache_dir, pretrain=pretrain)
    report, restore_seconds = None, 0.0
    if config is None and spec.arm.recalibrate_bn:
        t0 = time.perf_counter()
        data = calibration_data(train, settings.calibration_batches, settings.batch_size, spec.seed)
        recalibrate_batchnorm(model, data)
        restore_seconds = time.perf_counter() - t0
    if config is not None:
        from hf_plasticity import prepare_pretrained

        data = calibration_data(train, settings.calibration_batches, settings.batch_size, spec.seed)
        t0 = time.perf_counter()
        report = prepare_pretrained(model, config, data=data, recalibrate_batchnorm=False)
        if spec.arm.recalibrate_bn:
            recalibrate_batchnorm(model, data, reset_batchnorm_names(report))
        restore_seconds = time.perf_counter() - t0
    recipe = FineTuneConfig(
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        head_lr=settings.head_lr,
        backbone_lr=spec.backbone_lr,
        reinit_lr=spec.arm.reinit_lr,
        seed=spec.seed,
    )
    history = fine_tune(model, train, test, recipe)
    acc = history["test_acc"]
    epoch_seconds = sum(history["epoch_seconds"]) / len(history["epoch_seconds"])
    return {
        "model": spec.model,
        "target": spec.target,
        "arm": spec.arm.name,
        "strategy": spec.arm.strategy,
        "params": spec.arm.params,
        "recalibrate_bn": spec.arm.recalibrate_bn,
        "reinit_lr": spec.arm.reinit_lr,
        "backbone_lr": spec.backbone_lr,
        "head_lr": settings.head_lr,
        "seed": spec.seed,
        "recipe": settings.recipe(),
        "n_train": len(train[1]),
        "n_test": len(test[1]),
        "image_size": int(train[0].shape[-1]),
        "test_acc": acc,
        "train_loss": history["train_loss"],
        "final_acc": acc[-1],
        "best_acc": max(acc),
        "auc": sum(acc) / len(acc),
        "restore_seconds": restore_seconds,
        "epoch_seconds": epoch_seconds,
        "restore_cost_epochs": restore_seconds / epoch_seconds,
        "wall_seconds": time.perf_counter() - start,
        "report": report.to_dict() if report is not None and hasattr(report, "to_dict") else None,
        "env": {"torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version()},
    }


def _write_json(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str))
    tmp.replace(path)


def run_benchmark(settings: BenchSettings, progress: bool = True) -> dict[str, int]:
    """Run every unfinished cell of the grid and write one JSON per run under `output_dir/runs/`.

    Every small model with unfinished runs is first pretrained on the source (when not cached) and checked: the bench
    refuses, before running anything, a model whose source test accuracy is below `SOURCE_ACC_THRESHOLD` or whose
    last epochs are not flat.

    Raises:
        `ValueError`: an unknown model, target or arm, or an out-of-range setting (see [`BenchSettings.validate`]);
            nothing is written.
        [`UnderTrainedSourceError`]: naming the model, its recorded source accuracy and the threshold.

    Returns:
        `dict` with counts: `planned`, `done` (newly run), `skipped` (already finished), `unavailable` (arms whose
        strategy the library lacks or rejects).
    """
    settings.validate()
    torch.set_num_threads(settings.threads)
    out = runs_dir(settings.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    recipe = settings.recipe()
    specs = plan(settings)
    counts = {"planned": len(specs), "done": 0, "skipped": 0, "unavailable": 0}
    sources = {model: settings.source_cache(model) for model in settings.models}
    todo = []
    for spec in specs:
        if (out / f"{spec.run_id(recipe, sources[spec.model])}.json").exists():
            counts["skipped"] += 1
        else:
            todo.append(spec)
    checks = {}
    for model in dict.fromkeys(spec.model for spec in todo):
        pretrain = settings.pretrain_for(model) if is_source_pretrained(model) else None
        checks[model] = require_pretrained_source(model, settings.cache_dir, pretrain, progress=progress)
    unavailable: dict[str, str] = {}
    data_cache: dict[tuple[str, int], tuple] = {}
    from tqdm.auto import tqdm

    bar = tqdm(todo, desc="bench", disable=not progress, dynamic_ncols=True)
    for spec in bar:
        bar.set_postfix_str(f"{spec.model}/{spec.target}/{spec.arm.name}/lr={spec.backbone_lr:g}/s{spec.seed}")
        if spec.arm.name in unavailable:
            counts["unavailable"] += 1
            continue
        try:
            spec.arm.build_config(spec.seed)
        except (ImportError, ValueError, KeyError, TypeError) as err:
            unavailable[spec.arm.name] = str(err)
            logger.warning("Skipping arm %s: %s", spec.arm.name, err)
            counts["unavailable"] += 1
            continue
        size = settings.image_size or get_spec(spec.model).image_size
        key = (spec.target, size)
        if key not in data_cache:
            data = load_target(spec.target, size, settings.max_train, settings.max_test)
            data_cache[key] = (as_tensors(data["train"]), as_tensors(data["test"]))
        record = run_one(spec, *data_cache[key], settings)
        record["source"] = checks[spec.model]
        record["run_id"] = spec.run_id(recipe, sources[spec.model])
        _write_json(out / f"{record['run_id']}.json", record)
        counts["done"] += 1
    bar.close()
    return counts


def load_runs(output_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every finished run record under `output_dir/runs/`."""
    return [json.loads(p.read_text()) for p in sorted(runs_dir(output_dir).glob("*.json"))]
