"""A small, deterministic fine-tuning loop in plain torch (no Trainer): the same recipe for every arm.

AdamW over the library's [`plasticity_param_groups`] (the pretrained backbone, the blocks a restore re-drew and the
classification head, each with its own learning rate; no weight decay on biases and norms), a data order fixed by the
seed, and the test accuracy measured after every epoch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hf_plasticity.core.data import model_device_dtype


@dataclass
class FineTuneConfig:
    """The fine-tuning recipe.

    Args:
        epochs (`int`, *optional*, defaults to 8): passes over the training set.
        batch_size (`int`, *optional*, defaults to 32): training batch size.
        head_lr (`float`, *optional*, defaults to 1e-3): learning rate of the classification head.
        backbone_lr (`float`, *optional*, defaults to 1e-4): learning rate of the pretrained backbone.
        reinit_lr (`float`, *optional*): learning rate of the parameters a restore re-drew whole (None: `backbone_lr`).
        weight_decay (`float`, *optional*, defaults to 0.01): AdamW weight decay (not on biases and norms).
        seed (`int`, *optional*, defaults to 0): seeds the data order and dropout.
        eval_batch_size (`int`, *optional*, defaults to 256): batch size of the evaluation passes.
    """

    epochs: int = 8
    batch_size: int = 32
    head_lr: float = 1e-3
    backbone_lr: float = 1e-4
    reinit_lr: float | None = None
    weight_decay: float = 0.01
    seed: int = 0
    eval_batch_size: int = 256


def find_head(model: nn.Module) -> tuple[str, nn.Linear]:
    """The classification head: the last `nn.Linear` in module order (as in the library's structural fallback)."""
    head = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            head = (name, module)
    if head is None:
        raise ValueError(f"{type(model).__name__} has no nn.Linear to use as the classification head.")
    return head


def forward_logits(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Logits of a transformers model (`model(pixel_values=...).logits`) or of a plain module (`model(x)`)."""
    from transformers import PreTrainedModel

    if isinstance(model, PreTrainedModel):
        return model(pixel_values=pixel_values).logits
    out = model(pixel_values)
    return out.logits if hasattr(out, "logits") else out


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Accuracy of `model` on `(images, labels)`, in eval mode (the previous mode is restored); the batches go to the
    model's device."""
    was_training = model.training
    model.eval()
    correct, (device, _) = 0, model_device_dtype(model)
    for start in range(0, len(labels), batch_size):
        logits = forward_logits(model, images[start : start + batch_size].to(device))
        correct += (logits.argmax(-1).cpu() == labels[start : start + batch_size]).sum().item()
    model.train(was_training)
    return correct / max(len(labels), 1)


def augment(
    images: torch.Tensor, generator: torch.Generator, crop_padding: int, hflip: bool, padding_mode: str = "replicate"
) -> torch.Tensor:
    """Random crops (of the image padded by `crop_padding`) and horizontal flips of a batch: the source pretraining's
    augmentation, and with `hflip=False` the fine-tuning recipe's random shifts.

    Args:
        images (`torch.Tensor`): `(N, C, H, W)` batch.
        generator (`torch.Generator`): the source of every random choice (seeded per epoch by the caller).
        crop_padding (`int`): maximal shift in pixels; 0 leaves the images in place.
        hflip (`bool`): flip each image with probability 1/2.
        padding_mode (`str`, *optional*, defaults to `"replicate"`): how the border is extended (`F.pad`'s mode).
    """
    n, c, h, w = images.shape
    out = images
    if crop_padding > 0:
        padded = F.pad(images, (crop_padding,) * 4, mode=padding_mode)
        dy = torch.randint(0, 2 * crop_padding + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * crop_padding + 1, (n,), generator=generator)
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
        out = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    if hflip:
        flip = torch.rand(n, generator=generator) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)
    return out


def make_optimizer(config: FineTuneConfig, model: nn.Module) -> torch.optim.AdamW:
    """AdamW over [`plasticity_param_groups`]: the head at `head_lr`, the re-drawn blocks (from the model's restore
    record) at `reinit_lr`, the rest at `backbone_lr`."""
    from hf_plasticity import plasticity_param_groups

    groups = plasticity_param_groups(
        model,
        lr=config.backbone_lr,
        reinit_lr=config.reinit_lr,
        head_lr=config.head_lr,
        weight_decay=config.weight_decay,
    )
    return torch.optim.AdamW(groups)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of `n` training examples for `epoch`, a function of `(seed, epoch)` only."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator)


def fine_tune(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    config: FineTuneConfig,
    on_epoch: Callable[[int, float], None] | None = None,
) -> dict[str, list[float]]:
    """Fine-tune `model` on `train` and measure the accuracy on `test` after every epoch.

    Args:
        model (`nn.Module`): a transformers image classifier or a plain module returning logits.
        train (`tuple[torch.Tensor, torch.Tensor]`): training `(pixel_values, labels)`.
        test (`tuple[torch.Tensor, torch.Tensor]`): test `(pixel_values, labels)`.
        config ([`FineTuneConfig`]): the recipe.
        on_epoch (`Callable[[int, float], None]`, *optional*): called with `(epoch, test_accuracy)` after each epoch.

    Returns:
        `dict` with lists, one entry per epoch: `test_acc`, `train_loss` and `epoch_seconds` (training time only).
    """
    torch.manual_seed(config.seed)
    images, labels = train
    optimizer = make_optimizer(config, model)
    history: dict[str, list[float]] = {"test_acc": [], "train_loss": [], "epoch_seconds": []}
    for epoch in range(config.epochs):
        model.train()
        order = epoch_order(len(labels), config.seed, epoch)
        start, total, count = time.perf_counter(), 0.0, 0
        for first in range(0, len(order), config.batch_size):
            idx = order[first : first + config.batch_size]
            loss = F.cross_entropy(forward_logits(model, images[idx]), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            count += len(idx)
        history["epoch_seconds"].append(time.perf_counter() - start)
        history["train_loss"].append(total / max(count, 1))
        acc = evaluate(model, *test, batch_size=config.eval_batch_size)
        history["test_acc"].append(acc)
        if on_epoch is not None:
            on_epoch(epoch + 1, acc)
    return history


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, batches: list[dict[str, torch.Tensor]], module_names: list[str] | None = None
) -> list[str]:
    """Re-estimate BatchNorm running statistics from `batches` (a cumulative average, as in "precise BN"), with the
    library's [`hf_plasticity.pipeline.batchnorm.recalibrate_batchnorm`]; all BatchNorm modules when
    `module_names` is None.

    Returns:
        `list[str]`: the names of the re-estimated modules.
    """
    from hf_plasticity.pipeline.batchnorm import recalibrate_batchnorm as recalibrate

    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and (module_names is None or name in module_names)
    ]
    if names and batches:
        recalibrate(model, batches, names, num_batches=len(batches))
    return sorted(names)


def reset_batchnorm_names(report: object) -> list[str]:
    """Names of the BatchNorm modules whose running statistics a restore report says it reset."""
    names = set()
    for record in getattr(report, "tensors", []):
        if record.name.endswith(".running_mean"):
            names.add(record.name.rsplit(".", 1)[0])
    return sorted(names)
